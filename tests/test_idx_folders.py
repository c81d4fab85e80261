"""The user's own IDX files as ``--dataset DIR``: structure checked, no checksum; and the
canonical MNIST's checksum advice, which never tells a user to delete files nnx did not
download.
"""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

import nnx
from nnx import cli
from nnx.data import load, load_mnist, write_idx
from nnx.data.idx_folder import find_idx_sets
from nnx.data.mnist import FILES
from nnx.errors import ChecksumError, DataError

MNIST_NAMES = {"train_images": "train-images-idx3-ubyte.gz",
               "train_labels": "train-labels-idx1-ubyte.gz",
               "test_images": "t10k-images-idx3-ubyte.gz",
               "test_labels": "t10k-labels-idx1-ubyte.gz"}


def _images(n: int, seed: int, shape=(6, 6), classes: int = 3):
    """uint8 images whose class sets the brightness of a block, and their labels."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype(np.uint8)
    x = rng.integers(0, 60, (n, *shape), dtype=np.uint8)
    x[:, :3, :3] += (y * 60)[:, None, None].astype(np.uint8)
    return x, y


def _folder(path, names=MNIST_NAMES, n=(60, 20), **kw):
    path.mkdir(parents=True, exist_ok=True)
    x, y = _images(n[0], 0, **kw)
    xt, yt = _images(n[1], 1, **kw)
    arrays = {"train_images": x, "train_labels": y, "test_images": xt, "test_labels": yt}
    for role, name in names.items():
        write_idx(path / name, arrays[role])
    return arrays


def test_a_folder_of_idx_files_is_a_dataset_without_a_checksum(tmp_path):
    arrays = _folder(tmp_path / "kmnist")
    ds = load(str(tmp_path / "kmnist"))
    assert ds.x_train.shape == (60, 36) and ds.x_test.shape == (20, 36)
    assert ds.x_train.dtype == np.float32 and float(ds.x_train.max()) <= 1.0
    np.testing.assert_allclose(ds.x_train[0] * 255, arrays["train_images"][0].reshape(-1),
                               atol=1e-3)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.n_classes == 3 and ds.meta["image_shape"] == (6, 6)
    assert ds.meta["pixel_scale"] == 255.0


def test_training_files_alone_are_split_and_plain_copies_are_read(tmp_path):
    names = {"train_images": "train-images.idx3-ubyte", "train_labels": "train-labels.idx1-ubyte"}
    _folder(tmp_path / "sub", names, n=(50, 1))
    ds = load(str(tmp_path / "sub"), seed=2)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 50 and ds.x_test.shape[0] == 10


def test_several_sets_in_one_folder_are_chosen_by_name_and_mapping_names_classes(tmp_path):
    for prefix in ("emnist-letters", "emnist-digits"):
        _folder(tmp_path / "emnist", {k: f"{prefix}-{v.replace('t10k', 'test')}"
                                      for k, v in MNIST_NAMES.items()})
    assert sorted(find_idx_sets(tmp_path / "emnist")) == ["emnist-digits", "emnist-letters"]
    with pytest.raises(DataError, match="several IDX datasets.*emnist-digits.*emnist-letters"):
        load(str(tmp_path / "emnist"))
    (tmp_path / "emnist" / "emnist-letters-mapping.txt").write_text("0 65\n1 66\n2 67\n")
    ds = load(str(tmp_path / "emnist" / "emnist-letters"))
    assert ds.name == "emnist/emnist-letters" and ds.meta["class_names"] == ["A", "B", "C"]
    assert "class_names" not in load(str(tmp_path / "emnist" / "emnist-digits")).meta


@pytest.mark.parametrize("fault, words", [
    ("count", ["60 images", "59 labels", "do not belong"]),
    ("swapped", ["is it a label file"]),
    ("magic", ["magic number"]),
    ("truncated", ["truncated", "header promises"]),
    ("missing", ["test labels (idx1) file", "missing"]),
    ("shape", ["training images are (6, 6)", "test images are (5, 5)"]),
    ("empty", ["no IDX files", "train-images-idx3-ubyte.gz"]),
])
def test_bad_structure_is_named_and_never_asks_to_delete(tmp_path, fault, words):
    d = tmp_path / "mine"
    _folder(d)
    if fault == "count":
        write_idx(d / MNIST_NAMES["train_labels"], np.zeros(59, np.uint8))
    elif fault == "swapped":
        write_idx(d / MNIST_NAMES["train_images"], np.zeros(60, np.uint8))
    elif fault == "magic":
        (d / MNIST_NAMES["train_images"]).write_bytes(gzip.compress(b"<!DOCTYPE html>"))
    elif fault == "truncated":
        raw = gzip.decompress((d / MNIST_NAMES["test_images"]).read_bytes())
        (d / MNIST_NAMES["test_images"]).write_bytes(gzip.compress(raw[:-7]))
    elif fault == "missing":
        (d / MNIST_NAMES["test_labels"]).unlink()
    elif fault == "shape":
        write_idx(d / MNIST_NAMES["test_images"], np.zeros((20, 5, 5), np.uint8))
    else:
        for f in d.iterdir():
            f.rename(d / (f.name.replace("idx", "bin")))
    with pytest.raises(DataError) as err:
        load(str(d))
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "delete" not in message and "download" not in message


def test_the_command_line_trains_on_an_idx_folder(tmp_path, capsys):
    _folder(tmp_path / "digits-subset")
    out = tmp_path / "run"
    code = cli.main(["--dataset", str(tmp_path / "digits-subset"), "--epochs", "3", "--hidden",
                     "16", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    model = nnx.load(out / "model.npz")
    assert model.preprocessing.input_shape == (6, 6) and model.preprocessing.pixel_scale == 255
    raw = _images(20, 1)[0]
    assert model.predict(raw).shape == (20,)  # uint8 images as the files hold them


# --- the canonical downloads -------------------------------------------------------------


def _mnist_source(tmp_path):
    """A folder served as a mirror, with the four files and their checksums."""
    src = tmp_path / "mirror"
    _folder(src)
    return src, {name: hashlib.sha256((src / name).read_bytes()).hexdigest() for name in FILES}


def test_a_users_file_with_another_checksum_is_not_to_be_deleted(tmp_path):
    src, checksums = _mnist_source(tmp_path)
    plain = {name[:-3]: hashlib.sha256(gzip.decompress((src / name).read_bytes())).hexdigest()
             for name in FILES}
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in FILES:  # uncompressed copies: nnx never downloads those, they are the user's
        (cache / name[:-3]).write_bytes(gzip.decompress((src / name).read_bytes()))
    write_idx(cache / FILES[0][:-3], np.zeros((60, 6, 6), np.uint8))  # other images
    with pytest.raises(ChecksumError) as err:
        load_mnist("mnist", cache, checksums=plain, download=False)
    message = str(err.value)
    assert "is not the published mnist file" in message and "delete" not in message
    assert f"--dataset {cache}" in message and "--data-dir" in message
    assert load(str(cache)).x_train.shape == (60, 36)  # as their own folder they load


def test_a_gz_file_with_another_checksum_may_be_a_damaged_download(tmp_path):
    src, checksums = _mnist_source(tmp_path)
    cache = tmp_path / "cache"
    ds = load_mnist("mnist", cache, mirrors=[src.as_uri() + "/"], checksums=checksums,
                    quiet=True)
    assert ds.x_train.shape == (60, 36) and sorted(p.name for p in cache.iterdir()) == sorted(
        FILES)
    (cache / FILES[1]).write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(ChecksumError) as err:
        load_mnist("mnist", cache, checksums=checksums, download=False)
    message = str(err.value)
    assert FILES[1] in message and f"--dataset {cache}" in message
    assert "If nnx downloaded it, it has been damaged since: delete it" in message
