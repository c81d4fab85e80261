"""Labels that are names (CSV columns, .npz str arrays, HDF5 bytes) become classes whose names
the model keeps; ``task=`` / ``--task`` overrides the guess from the labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnx
from nnx import cli
from nnx.data import load, load_file
from nnx.errors import ConfigError, DataError

SPECIES = np.array(["setosa", "versicolor", "virginica"])


def _table(n=90, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return rng.normal(size=(n, 2)) + labels[:, None] * 3.0, labels


def _csv(path, x, names, header=None, label_first=False):
    rows = [([n] + [f"{v:.5f}" for v in r]) if label_first else ([f"{v:.5f}" for v in r] + [n])
            for r, n in zip(x, names)]
    text = "".join(",".join(r) + "\n" for r in rows)
    path.write_text((header + "\n" if header else "") + text)
    return path


@pytest.mark.parametrize("layout", ["no-header", "header", "named-first", "quoted"])
def test_text_labels_in_a_csv_become_named_classes(tmp_path, layout):
    x, labels = _table()
    names = SPECIES[labels]
    if layout == "no-header":
        path = _csv(tmp_path / "iris.csv", x, names)
    elif layout == "header":
        path = _csv(tmp_path / "iris.csv", x, names, header="width,height,species")
    elif layout == "named-first":
        path = _csv(tmp_path / "iris.csv", x, names, header="label,width,height",
                    label_first=True)
    else:
        path = _csv(tmp_path / "iris.csv", x, [f'"{n}"' for n in names])
    ds = load_file(path, test_fraction=0.2)
    assert ds.task == "classification" and ds.n_classes == 3 and ds.n_features == 2
    assert ds.meta["class_names"] == list(SPECIES)
    both = np.concatenate([ds.x_train, ds.x_test])
    codes = np.concatenate([ds.y_train, ds.y_test])
    nearest = np.argmin(((both[:, None, :] - x[None, :, :]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_array_equal(codes, labels[nearest])  # each row kept its own name


def test_text_labels_in_npz_and_bytes_are_mapped_over_train_and_test(tmp_path):
    x, labels = _table()
    names = SPECIES[labels]
    np.savez(tmp_path / "d.npz", x=x[:60], y=names[:60], x_test=x[60:],
             y_test=names[60:].astype("S"))
    ds = load_file(tmp_path / "d.npz")
    assert ds.meta["class_names"] == list(SPECIES)
    np.testing.assert_array_equal(ds.y_test, labels[60:])
    # a class that only the test set has still gets its index
    np.savez(tmp_path / "t.npz", x=x[:60], y=np.where(labels[:60] == 2, "setosa", names[:60]),
             x_test=x[60:], y_test=names[60:])
    assert load_file(tmp_path / "t.npz").meta["class_names"] == list(SPECIES)


def test_text_in_a_feature_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,label\n1,2,cat\n3,oops,dog\n")
    with pytest.raises(DataError, match=r"row 2, column 'b' holds 'oops'.*label column"):
        load_file(path)


def test_text_labels_cannot_be_regression_targets(tmp_path):
    x, labels = _table()
    np.savez(tmp_path / "d.npz", x=x, y=SPECIES[labels])
    with pytest.raises(DataError, match="text.*--task regression"):
        load_file(tmp_path / "d.npz", task="regression")


def test_task_overrides_the_guess(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    prices = np.round(1000 + 300 * x[:, 0]).astype(np.int64)  # whole numbers: look like labels
    np.savez(tmp_path / "prices.npz", x=x, y=prices)
    with pytest.raises(DataError, match="--task regression"):
        load_file(tmp_path / "prices.npz")  # would ask for an output per price
    ds = load(str(tmp_path / "prices.npz"), task="regression")
    assert ds.task == "regression" and ds.y_train.shape[1] == 1 and ds.n_classes is None
    floats = np.where(x[:, 1] > 0, 1.0, 0.0)
    np.savez(tmp_path / "f.npz", x=x, y=floats + 0.25)
    with pytest.raises(DataError, match="not a whole number"):
        load(str(tmp_path / "f.npz"), task="classification")
    with pytest.raises(ConfigError, match="digits is a classification dataset.*--task"):
        load("digits", task="regression")
    assert load("digits", task="classification").task == "classification"


def test_a_model_trained_on_names_predicts_names(tmp_path, capsys):
    x, labels = _table(150)
    path = _csv(tmp_path / "iris.csv", x, SPECIES[labels], header="w,h,species")
    out = tmp_path / "run"
    code = cli.main(["--dataset", str(path), "--epochs", "20", "--hidden", "16", "--lr",
                     "0.02", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    model = nnx.load(out / "model.npz")
    assert model.class_names == list(SPECIES)
    predicted = model.predict(x)
    assert predicted.dtype.kind == "U" and np.mean(predicted == SPECIES[labels]) > 0.8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.7


def test_the_task_flag_trains_whole_number_targets_as_a_regression(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 2))
    y = np.round(60 + 10 * x[:, 0] - 5 * x[:, 1])
    np.savez(tmp_path / "counts.npz", x=x, y=y)
    out = tmp_path / "run"
    code = cli.main(["--dataset", str(tmp_path / "counts.npz"), "--task", "regression",
                     "--epochs", "2", "--hidden", "8", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert nnx.load(out / "model.npz").n_out == 1  # one output, not a class per count
    config = json.loads((out / "config.json").read_text())["settings"]
    assert config["task"] == {"value": "regression", "source": "flag"}
    assert cli.main(["--dataset", "digits", "--task", "astrology", "--quiet"]) == 2
    assert "task must be classification or regression" in capsys.readouterr().err


def test_hdf5_class_names_come_back_as_predictions(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(4)
    y = (np.arange(120) % 2).astype(np.int64)
    x = rng.integers(0, 100, (120, 4, 4, 3)).astype(np.uint8)
    x[y == 1, :2] += 120  # the course's layout: cats are brighter on top
    for split, rows in (("train", slice(0, 90)), ("test", slice(90, 120))):
        with h5py.File(tmp_path / f"{split}_catvnoncat.h5", "w") as f:
            f[f"{split}_set_x"] = x[rows]
            f[f"{split}_set_y"] = y[rows][None, :]  # stored as a row (1, m)
            f["list_classes"] = np.array([b"non-cat", b"cat"])
    out = tmp_path / "run"
    code = cli.main(["--dataset", str(tmp_path / "train_catvnoncat.h5"), "--standardize",
                     "--epochs", "20", "--lr", "0.01", "--hidden", "8", "--quiet", "--out",
                     str(out)])
    assert code == 0, capsys.readouterr().err
    model = nnx.load(out / "model.npz")
    assert model.class_names == ["non-cat", "cat"]
    assert model.preprocessing.input_shape == (4, 4, 3)
    predicted = model.predict(x[90:])  # the raw uint8 pictures
    assert set(predicted) <= {"non-cat", "cat"} and np.mean(
        predicted == np.array(["non-cat", "cat"])[y[90:]]) > 0.9
