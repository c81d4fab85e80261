"""HDF5 data files, written here with h5py: the course's layout, x/y files, and bad files."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import nnx
from nnx.errors import DataError, MissingExtra

h5py = pytest.importorskip("h5py")

from nnx.data.hdf5 import read_hdf5  # noqa: E402


def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


def _course(folder, m=12, m_test=6, side=64, seed=0):
    """The course's cat files: train_catvnoncat.h5 and test_catvnoncat.h5 beside it."""
    rng = np.random.default_rng(seed)
    classes = np.array([b"non-cat", b"cat"])
    y = rng.integers(0, 2, m)
    y[:2] = [0, 1]
    yt = rng.integers(0, 2, m_test)
    train = _write(folder / "train_catvnoncat.h5", list_classes=classes,
                   train_set_x=rng.integers(0, 256, (m, side, side, 3), dtype=np.uint8),
                   train_set_y=y.reshape(1, m))  # the course stores a row
    _write(folder / "test_catvnoncat.h5", list_classes=classes,
           test_set_x=rng.integers(0, 256, (m_test, side, side, 3), dtype=np.uint8),
           test_set_y=yt)
    return train, y, yt


def test_the_course_layout_with_its_test_file_beside_it(tmp_path):
    train, y, yt = _course(tmp_path)
    data = nnx.data.load(train)
    assert data.x_train.shape == (12, 64 * 64 * 3) and data.x_train.dtype == np.float32
    assert data.x_test.shape == (6, 64 * 64 * 3)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    with h5py.File(train, "r") as f:
        raw = f["train_set_x"][()]
    np.testing.assert_allclose(data.x_train[0], raw[0].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, y)
    np.testing.assert_array_equal(data.y_test, yt)
    assert data.n_classes == 2 and data.task == "classification"
    assert data.meta["class_names"] == ["non-cat", "cat"]
    assert tuple(data.meta["image_shape"]) == (64, 64, 3)
    assert data.meta["test_source"] == str(tmp_path / "test_catvnoncat.h5")


def test_the_course_layout_trains(tmp_path):
    train, _, _ = _course(tmp_path, m=40, m_test=10, side=8)
    data = nnx.data.load(str(train))
    trainer = nnx.Trainer(nnx.mlp([data.n_features, 8, 2]), seed=0)
    trainer.fit(data.x_train, data.y_train, epochs=2, batch_size=16)
    assert set(trainer.evaluate(data.x_test, data.y_test)) == {"loss", "accuracy"}


def test_the_course_layout_without_a_test_file_is_split(tmp_path):
    train, _, _ = _course(tmp_path, m=20, side=4)
    (tmp_path / "test_catvnoncat.h5").unlink()
    data = nnx.data.load(train, test_fraction=0.25)
    assert len(data.x_train) + len(data.x_test) == 20 and len(data.x_test) == 5
    assert "test_source" not in data.meta


def test_x_and_y_datasets_with_a_test_set_and_class_names(tmp_path):
    rng = np.random.default_rng(1)
    path = _write(tmp_path / "mine.hdf5", X=rng.normal(size=(30, 4)),
                  Y=rng.integers(0, 3, 30), X_test=rng.normal(size=(9, 4)),
                  Y_test=rng.integers(0, 3, 9), classes=np.array([b"a", b"b", b"c"]))
    data = nnx.data.load(path)
    assert data.x_train.shape == (30, 4) and data.x_test.shape == (9, 4)
    assert data.meta["class_names"] == ["a", "b", "c"] and data.n_classes == 3
    x, y, test, meta = read_hdf5(path)
    assert x.dtype == np.float64 and test[0].shape == (9, 4) and meta == {
        "class_names": ["a", "b", "c"]}


def test_x_train_y_train_and_regression_targets(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(25, 3))
    path = _write(tmp_path / "reg.h5", x_train=x, y_train=x @ [1.0, -2.0, 0.5] + 0.3)
    data = nnx.data.load(path)
    assert data.task == "regression" and data.n_classes is None
    assert data.y_train.shape[1] == 1 and len(data.x_train) + len(data.x_test) == 25


def test_a_file_without_known_datasets_lists_what_it_has(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((5, 3))
        f.create_group("more")["labels"] = np.zeros(5, dtype=np.int64)
    with pytest.raises(DataError) as info:
        nnx.data.load(path)
    message = str(info.value)
    assert "has no datasets nnx recognises" in message
    assert "images (5, 3) float64" in message and "more/labels (5,) int64" in message
    assert "x and y" in message and "train_set_x" in message


def test_the_course_test_file_alone_says_to_pass_the_train_file(tmp_path):
    _course(tmp_path, side=4)
    with pytest.raises(DataError, match="course's test file: pass the train_"):
        nnx.data.load(tmp_path / "test_catvnoncat.h5")


def test_half_a_test_set_and_unnamed_labels(tmp_path):
    path = _write(tmp_path / "half.h5", x=np.zeros((4, 2)), y=np.arange(4) % 2,
                  x_test=np.zeros((2, 2)))
    with pytest.raises(DataError, match="only one of 'x_test' and 'y_test'"):
        nnx.data.load(path)
    named = _write(tmp_path / "named.h5", x=np.zeros((4, 2)), y=np.array([0, 1, 2, 1]),
                   list_classes=np.array([b"no", b"yes"]))
    with pytest.raises(DataError, match=r"label 2 has no class name: the file names 2 classes"):
        nnx.data.load(named)


def test_a_sibling_test_file_without_the_test_datasets(tmp_path):
    train, _, _ = _course(tmp_path, side=4)
    _write(tmp_path / "test_catvnoncat.h5", pictures=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"test_catvnoncat.h5 \(the test file beside "
                                        r"train_catvnoncat.h5\) has no test_set_x"):
        nnx.data.load(train)


def test_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "fake.h5"
    path.write_text("not hdf5\n")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        nnx.data.load(path)


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    path = _write(tmp_path / "d.h5", x=np.zeros((4, 2)), y=np.arange(4) % 2)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtra, match=r"pip install 'nnx-trainer\[hdf5\]'"):
        nnx.data.load(path)
