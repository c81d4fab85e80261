"""nnx.data.mnist without a network: MNIST-format files already in the data directory
(compressed or not, under either spelling), checked against the SHA-256 table, and
the published table of files, checksums and mirrors.

Downloads are in test_download.py; the files are made in tests/mnist_files.py.
"""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
from mnist_files import check_dataset, isolate, mnist_files

from nnx.data import load_mnist, write_idx
from nnx.data.mnist import FILES, SOURCES
from nnx.errors import ChecksumError, DataError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test sees the user's cache or mirror settings."""
    isolate(tmp_path, monkeypatch)


# --- files already in the data directory ------------------------------------------------------


def test_files_already_in_the_data_dir_need_no_network(tmp_path, dead_url, mnist_blobs,
                                                       mnist_arrays):
    for name, body in mnist_blobs[0].items():
        (tmp_path / name).write_bytes(body)
    ds = load_mnist("mnist", tmp_path, mirrors=[dead_url], checksums=mnist_blobs[1], quiet=True)
    check_dataset(ds, mnist_arrays)


def test_files_already_present_are_used_without_a_network(tmp_path):
    files = mnist_files(tmp_path / "data")
    checksums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    ds = load_mnist("mnist", data_dir=tmp_path / "data", mirrors=["http://127.0.0.1:9/"],
                    checksums=checksums, download=False)
    assert ds.x_train.shape == (20, 784)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_mnist("mnist", data_dir=tmp_path / "data", checksums=checksums, download=False)


@pytest.mark.parametrize("style", ["dash", "dot"])
def test_uncompressed_copies_are_used(tmp_path, dead_url, mnist_arrays, style):
    for name, array in zip(FILES, mnist_arrays):
        plain = name[:-3] if style == "dash" else name[:-3].replace("-idx", ".idx")
        write_idx(tmp_path / plain, array)
    ds = load_mnist("mnist", tmp_path, mirrors=[dead_url], checksums={}, download=False)
    check_dataset(ds, mnist_arrays)


def test_uncompressed_copies_under_either_name_are_verified(tmp_path):
    files = mnist_files(tmp_path / "gz")
    plain = {name[:-3]: gzip.decompress(body) for name, body in files.items()}
    checksums = {name: hashlib.sha256(body).hexdigest() for name, body in plain.items()}
    data = tmp_path / "data"
    data.mkdir()
    for name, body in plain.items():  # the dotted spelling some mirrors use
        (data / name.replace("-idx", ".idx", 1)).write_bytes(body)
    ds = load_mnist("mnist", data_dir=data, checksums=checksums, download=False)
    assert ds.x_train.shape == (20, 784)
    first = data / "train-images.idx3-ubyte"
    first.write_bytes(first.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ChecksumError, match="train-images.idx3-ubyte"):
        load_mnist("mnist", data_dir=data, checksums=checksums, download=False)


def test_uncompressed_copy_with_a_known_wrong_checksum_is_refused(tmp_path, mnist_arrays,
                                                                  mnist_blobs):
    for name, array in zip(FILES, mnist_arrays):
        write_idx(tmp_path / name[:-3], array)
    # the published table knows the SHA-256 of the real uncompressed MNIST files; nnx never
    # downloads uncompressed copies, so these are the user's: train on them, do not delete
    with pytest.raises(ChecksumError, match="--dataset") as err:
        load_mnist("mnist", tmp_path, download=False)
    assert "delete" not in str(err.value)


def test_existing_file_with_a_wrong_checksum_says_to_delete_it(tmp_path, mnist_blobs):
    for name, body in mnist_blobs[0].items():
        (tmp_path / name).write_bytes(body)
    (tmp_path / FILES[1]).write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(ChecksumError, match="delete it") as err:
        load_mnist("mnist", tmp_path, checksums=mnist_blobs[1], download=False)
    assert FILES[1] in str(err.value)


def test_missing_files_without_download(tmp_path, mnist_blobs):
    (tmp_path / FILES[0]).write_bytes(mnist_blobs[0][FILES[0]])
    with pytest.raises(DataError, match="not found") as err:
        load_mnist("mnist", tmp_path, checksums=mnist_blobs[1], download=False)
    assert FILES[1] in str(err.value) and FILES[0] not in str(err.value)


def test_files_that_do_not_fit_together(tmp_path, mnist_arrays):
    xtr, ytr, xte, yte = mnist_arrays
    for name, a in zip(FILES, (xtr, ytr[:5], xte, yte)):
        write_idx(tmp_path / name[:-3], a)
    with pytest.raises(DataError, match="do not fit together"):
        load_mnist("mnist", tmp_path, checksums={}, download=False)
    write_idx(tmp_path / FILES[1][:-3], np.full(12, 11, np.uint8))
    with pytest.raises(DataError, match="labels go up to 11"):
        load_mnist("mnist", tmp_path, checksums={}, download=False)


# --- the published table and the mirrors ------------------------------------------------------


def test_published_table():
    for which, source in SOURCES.items():
        for name in FILES:
            digest = source["sha256"][name]
            assert len(digest) == 64 and int(digest, 16) >= 0, (which, name)
        assert all(u.startswith("http") and u.endswith("/") for u in source["mirrors"])
    assert SOURCES["mnist"]["mirrors"][0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert SOURCES["mnist"]["sha256"]["train-images-idx3-ubyte.gz"].startswith("440fcabf")


def test_mirror_precedence(monkeypatch):
    from nnx.data.mnist import mirrors_for

    assert mirrors_for("mnist") == list(SOURCES["mnist"]["mirrors"])
    monkeypatch.setenv("NNX_MNIST_MIRROR", "http://a/, http://b/")
    assert mirrors_for("mnist") == ["http://a/", "http://b/"]
    assert mirrors_for("fashion-mnist") == list(SOURCES["fashion-mnist"]["mirrors"])
    assert mirrors_for("mnist", ["http://c/"]) == ["http://c/"]
    assert mirrors_for("mnist", "http://d/") == ["http://d/"]
    monkeypatch.setenv("NNX_MNIST_MIRROR", " , ")
    assert mirrors_for("mnist") == list(SOURCES["mnist"]["mirrors"])
