"""The user's files as datasets (nnx.data.load_file and load of a path): .npz with or
without test arrays, images and one-hot labels, regression targets, and CSV with or
without a header; each problem in a file is a data error naming it.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from nnx.data import Dataset, load, load_file
from nnx.errors import DataError


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "cache"))


def _same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("x_train", "y_train", "x_test", "y_test"))


# --- .npz -------------------------------------------------------------------------------------


def test_npz_with_x_and_y_is_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 3)), np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load(str(tmp_path / "d.npz"), seed=1)
    assert ds.name == "d.npz" and ds.task == "classification" and ds.n_classes == 4
    assert ds.x_train.shape == (80, 3) and ds.x_train.dtype == np.float32
    assert np.bincount(ds.y_test).tolist() == [5, 5, 5, 5]
    assert _same(ds, load(tmp_path / "d.npz", seed=1))


def test_npz_loading(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load(str(tmp_path / "d.npz"), seed=1)
    assert ds.task == "classification" and ds.n_classes == 5
    assert len(ds.x_train) + len(ds.x_test) == 50 and ds.x_train.dtype == np.float32
    images = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=images, y=np.arange(30) % 2, x_test=images[:5],
             y_test=np.arange(5) % 2)
    ds = load_file(tmp_path / "img.npz")
    assert ds.x_train.shape == (30, 16) and ds.x_test.shape == (5, 16)
    assert ds.x_train.max() <= 1.0 and ds.meta["image_shape"] == (4, 4)
    np.savez(tmp_path / "reg.npz", x=x, y=x @ [1.0, 2.0, 3.0] + 0.5)
    assert load_file(tmp_path / "reg.npz").task == "regression"


def test_npz_with_test_arrays_images_and_one_hot(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    y = np.eye(3)[np.arange(30) % 3]
    xt = rng.integers(0, 256, (9, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=x, y=y, x_test=xt, y_test=np.arange(9) % 3)
    ds = load_file(tmp_path / "img.npz")
    assert ds.x_train.shape == (30, 16) and ds.x_test.shape == (9, 16)
    np.testing.assert_array_equal(ds.x_train, x.reshape(30, 16).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train, np.arange(30) % 3)
    assert ds.y_train.dtype == np.int64 and ds.n_classes == 3
    assert ds.meta["one_hot"] is True and ds.meta["image_shape"] == (4, 4)


def test_npz_regression_targets(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 2))
    np.savez(tmp_path / "r.npz", x=x, y=x[:, :1] * 0.5 + 0.25)
    ds = load_file(tmp_path / "r.npz")
    assert ds.task == "regression" and ds.y_train.shape == (40, 1)
    assert ds.y_train.dtype == np.float32 and ds.n_classes is None
    np.savez(tmp_path / "ints.npz", x=x, y=np.arange(50) % 7)
    assert load_file(tmp_path / "ints.npz", task="regression").task == "regression"


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.ones((4, 2))}, "must hold arrays named 'x' and 'y'"),
    ({"x": np.ones((4, 2)), "y": np.zeros(3)}, "x has 4 rows but y has 3"),
    ({"x": np.ones((0, 2)), "y": np.zeros(0)}, "empty"),
    ({"x": np.ones((4, 2)), "y": np.zeros(4), "x_test": np.ones((2, 2))}, "only one of"),
    ({"x": np.ones((4, 2)), "y": np.zeros(4), "x_test": np.ones((2, 3)),
      "y_test": np.zeros(2)}, "x_test has 3"),
    ({"x": np.array([[1.0, np.nan], [0, 0]]), "y": np.zeros(2)}, "1 NaN or infinite.*row 0"),
    ({"x": np.ones(4), "y": np.zeros(4)}, "must be 2-D"),
])
def test_npz_problems(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_file(tmp_path / "bad.npz")


def test_npz_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([[1, "a"]], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="object arrays"):
        load_file(tmp_path / "obj.npz")


def test_string_labels_are_classes_and_empty_image_files_are_data_errors(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.ones((4, 2)), y=np.array(["a", "b", "a", "b"]))
    assert load_file(tmp_path / "s.npz", test_fraction=0.5).meta["class_names"] == ["a", "b"]
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0))
    with pytest.raises(DataError, match="empty"):
        load_file(tmp_path / "e.npz")


def test_labels_that_cannot_be_class_indices(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2))
    y = np.zeros(40)
    y[-1] = 2.0 ** 40  # would ask for an output layer of 2**40 units
    np.savez(tmp_path / "huge.npz", x=x, y=y)
    with pytest.raises(DataError, match="out of range"):
        load_file(tmp_path / "huge.npz")
    np.savez(tmp_path / "gap.npz", x=x, y=np.r_[np.zeros(20), np.full(20, 4)])
    with pytest.warns(UserWarning, match="classes 1, 2, 3 have no examples"):
        ds = load_file(tmp_path / "gap.npz")
    assert ds.n_classes == 5


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load(str(tmp_path / "missing.npz"))
    assert str(tmp_path / "missing.npz") in str(err.value)
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DataError, match="unknown file type"):
        load(str(tmp_path / "data.txt"))


# --- CSV --------------------------------------------------------------------------------------


def test_csv_label_in_last_column(tmp_path):
    rows = [f"{i * 0.5},{i % 3 * 1.5},{i % 3}" for i in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    ds = load(str(tmp_path / "d.csv"))
    assert ds.x_train.shape == (24, 2) and ds.n_classes == 3
    assert np.array_equal(ds.x_train[:, 1] / 1.5, ds.y_train)


def test_csv_with_a_header_and_a_named_label_column(tmp_path):
    rows = ["label,a,y_coord"] + [f"{i % 2},{i},{-i}" for i in range(20)]
    (tmp_path / "h.csv").write_text("\n".join(rows))
    ds = load_file(tmp_path / "h.csv", test_fraction=0.5)
    assert ds.x_train.shape == (10, 2) and ds.n_classes == 2
    assert np.array_equal(ds.x_train[:, 0] % 2, ds.y_train)
    with gzip.open(tmp_path / "h.csv.gz", "wt") as f:
        f.write("x,y,class\n" + "\n".join(f"{i},{i % 2},{i % 2}" for i in range(20)))
    ds = load(str(tmp_path / "h.csv.gz"))
    assert ds.x_train.shape == (16, 2)  # "class" wins over "y" as the label


def test_csv_loading_with_and_without_a_header(tmp_path):
    rows = [(i, 2 * i, i % 3) for i in range(30)]
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"{a},{b},{c}\n" for a, b, c in rows))
    ds = load(str(plain))
    assert ds.n_features == 2 and ds.n_classes == 3
    headed = tmp_path / "headed.csv"
    headed.write_text("label,a,b\n" + "".join(f"{c},{a},{b}\n" for a, b, c in rows))
    dh = load(str(headed))
    assert dh.n_features == 2 and dh.n_classes == 3
    np.testing.assert_array_equal(np.sort(dh.x_train[:, 0]), np.sort(ds.x_train[:, 0]))
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,0\n1,x,1\n")
    with pytest.raises(DataError, match="numeric CSV"):
        load(str(bad))


@pytest.mark.parametrize("text,match", [
    ("1,2,0\n3,abc,1\n", "not a numeric CSV"),
    ("1,2,0\n3,4\n", "not a numeric CSV"),
    ("1,0\nnan,1\n2,0\n", "NaN or infinite values.*row 1"),
    ("1\n2\n", "at least two columns"),
    ("1,2,-1\n3,4,0\n", "label -1 in row 0 is negative"),
])
def test_csv_problems(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_file(tmp_path / "bad.csv")
    assert str(tmp_path / "bad.csv") in str(err.value)
