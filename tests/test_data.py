"""nnx.data: loaders (shapes, dtypes, determinism), splits, IDX files, user files, checks."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from nnx.data import (
    DATASETS,
    Dataset,
    Standardizer,
    check_xy,
    find_duplicates,
    load,
    load_digits,
    load_file,
    read_idx,
    spirals,
    stratified_split,
    to_unit_range,
    write_idx,
)
from nnx.data.digits import read_digits
from nnx.data.synthetic import GENERATORS
from nnx.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "cache"))


def _same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("x_train", "y_train", "x_test", "y_test"))


# --- synthetic sets and load() -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_synthetic_shapes_dtypes_and_determinism(name):
    ds = load(name, seed=3)
    n = len(ds.x_train) + len(ds.x_test)
    assert ds.name == name and len(ds.y_train) == len(ds.x_train)
    assert ds.x_train.dtype == np.float32 and ds.x_train.ndim == 2
    assert ds.x_test.shape[1] == ds.x_train.shape[1] == ds.n_features
    assert len(ds.x_test) == round(0.2 * n)
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    if name == "regression":
        assert ds.task == "regression" and ds.n_classes is None
        assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (len(ds.x_train), 1)
    else:
        assert ds.task == "classification" and ds.y_train.dtype == np.int64
        assert set(np.unique(ds.y_train)) == set(range(ds.n_classes))
        assert set(np.unique(ds.y_test)) == set(range(ds.n_classes))
    assert _same(ds, load(name, seed=3))
    assert not _same(ds, load(name, seed=4))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_synthetic_take_a_generator(name):
    a = GENERATORS[name](n=200, rng=np.random.default_rng(9))
    b = GENERATORS[name](n=200, rng=9)
    assert _same(a, b) and len(a.x_train) + len(a.x_test) == 200


def test_synthetic_options():
    ds = load("blobs", n=300, classes=5, features=7, test_fraction=0.5)
    assert ds.x_train.shape == (150, 7) and ds.n_classes == 5
    ds = load("regression", n=100, features=3, outputs=2)
    assert ds.y_train.shape == (80, 2) and ds.y_test.shape == (20, 2)
    ds = spirals(n=600, classes=4)
    assert ds.n_classes == 4 and np.bincount(ds.y_train).tolist() == [120] * 4


@pytest.mark.parametrize("call", [
    lambda: spirals(n=3), lambda: spirals(classes=1), lambda: spirals(noise=-1),
    lambda: load("circles", factor=2.0), lambda: load("blobs", features=0),
    lambda: spirals(rng="seed"), lambda: spirals(test_fraction=1.5),
])
def test_synthetic_bad_options(call):
    with pytest.raises(ConfigError):
        call()


def test_spirals_are_well_separated_arms():
    """Three arms, each point closer to its own arm's curve than to any other (learnable)."""
    ds = spirals(seed=0)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert x.shape == (1500, 2) and np.abs(x).max() <= 1.0 + 1e-6
    r = np.hypot(x[:, 0], x[:, 1])
    # the noise-free angle of arm c at radius r is 4 r + 2 pi c / 3
    arms = (4.0 * r[:, None] + np.arange(3) * 2 * np.pi / 3)
    diff = np.angle(np.exp(1j * (np.arctan2(x[:, 1], x[:, 0])[:, None] - arms)))
    assert (np.argmin(np.abs(diff), axis=1) == y).mean() > 0.97


def test_load_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="did you mean 'spirals'") as err:
        load("spiral")
    for name in DATASETS:
        assert name in str(err.value)
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "spirals", "moons", "circles",
                             "xor", "blobs", "regression"}


def test_load_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="noize.*options are n, classes, noise"):
        load("spirals", noize=0.1)


def test_dataset_is_frozen_and_checks_its_task():
    ds = load("xor", n=40)
    with pytest.raises(AttributeError):
        ds.name = "other"
    with pytest.raises(ConfigError):
        Dataset(ds.x_train, ds.y_train, ds.x_test, ds.y_test, "x", 2, "clustering")
    assert "xor" in repr(ds) and "train=(32, 2)" in repr(ds)


# --- digits and the stratified split -------------------------------------------------------


def test_digits_bundled():
    ds = load("digits")
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.n_classes == 10 and ds.meta["image_shape"] == (8, 8)
    assert "CC BY 4.0" in ds.meta["source"]
    x, y = read_digits()
    assert x.shape == (1797, 64) and np.array_equal(np.unique(x * 16), np.arange(17))
    # train and test partition the bundled table
    both = np.concatenate([ds.x_train, ds.x_test])
    assert np.array_equal(np.sort(both, axis=0), np.sort(x, axis=0))
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == \
        np.bincount(y).tolist()


def test_digits_split_is_stratified_and_seeded():
    ds = load_digits(seed=0)
    _, y = read_digits()
    full, test = np.bincount(y), np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test - 0.2 * full) <= 1)
    assert _same(ds, load_digits(seed=0)) and not _same(ds, load_digits(seed=1))
    assert len(load_digits(test_fraction=0.5).x_test) == round(1797 * 0.5)


def test_stratified_split_partitions_and_keeps_ratios():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    keep, held = stratified_split(y, 0.2, rng)
    assert keep.dtype == np.int64 and held.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(100))
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)
    assert np.bincount(y[held]).tolist() == [10, 6, 3, 1]
    k2, h2 = stratified_split(y, 0.2, np.random.default_rng(0))
    assert np.array_equal(held, h2) and np.array_equal(keep, k2)


def test_stratified_split_rounds_the_total_and_never_empties_a_class():
    y = np.repeat(np.arange(10), 4)  # 10% of 40 is 4, though each class rounds to 0
    _, held = stratified_split(y, 0.1, np.random.default_rng(1))
    assert len(held) == 4 and np.bincount(y[held]).max() == 1
    y = np.array([0, 0, 0, 0, 1])  # the single example of class 1 stays in keep
    keep, held = stratified_split(y, 0.5, np.random.default_rng(1))
    assert 4 in keep and len(held) == 2
    keep, held = stratified_split(np.zeros(5, np.int64), 0.0, np.random.default_rng(1))
    assert len(held) == 0 and len(keep) == 5


def test_stratified_split_of_regression_targets_is_random():
    y = np.linspace(0, 1, 50, dtype=np.float32)[:, None]
    keep, held = stratified_split(y, 0.3, np.random.default_rng(2))
    assert len(held) == 15 and len(keep) == 35
    with pytest.raises(ConfigError):
        stratified_split(y, -0.1, np.random.default_rng(2))


# --- IDX files -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,shape", [("uint8", (5, 28, 28)), ("uint8", (7,)),
                                         ("int16", (3, 4)), ("float32", (2, 3, 2)),
                                         ("float64", (4,)), ("int32", (2, 2))])
def test_idx_round_trip(tmp_path, suffix, dtype, shape):
    a = (np.arange(np.prod(shape)) * 3 - 5).reshape(shape).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == shape and np.array_equal(a, b)
    assert b.dtype.isnative
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_idx_mnist_header_bytes(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    raw = (tmp_path / "i").read_bytes()
    assert raw[:4] == bytes.fromhex("00000803") and int.from_bytes(raw[4:8], "big") == 2
    assert len(raw) == 16 + 2 * 784


def test_idx_bad_magic_names_the_file_and_the_expected_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="bad magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "0x00000803" in str(err.value)
    path.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataError, match="unknown IDX dtype code 0x42"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    write_idx(good, np.ones((10, 28, 28), np.uint8))
    raw = good.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    if suffix:  # a complete gzip stream of a truncated file, and a cut gzip stream
        cut.write_bytes(gzip.compress(gzip.decompress(raw)[:-100]))
    else:
        cut.write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated.*delete it") as err:
        read_idx(cut)
    assert str(cut) in str(err.value)
    if suffix:
        cut.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(DataError, match="truncated or corrupt.*delete it"):
            read_idx(cut)
    (tmp_path / "h").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(tmp_path / "h")


def test_idx_extra_bytes_and_missing_file(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.ones(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="2 bytes after"):
        read_idx(path)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match="IDX cannot hold"):
        write_idx(tmp_path / "y", np.ones(3, np.int64))


# --- the user's files ----------------------------------------------------------------------


def test_npz_with_x_and_y_is_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 3)), np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load(str(tmp_path / "d.npz"), seed=1)
    assert ds.name == "d.npz" and ds.task == "classification" and ds.n_classes == 4
    assert ds.x_train.shape == (80, 3) and ds.x_train.dtype == np.float32
    assert np.bincount(ds.y_test).tolist() == [5, 5, 5, 5]
    assert _same(ds, load(tmp_path / "d.npz", seed=1))


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


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load(str(tmp_path / "missing.npz"))
    assert str(tmp_path / "missing.npz") in str(err.value)
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DataError, match="unknown file type"):
        load(str(tmp_path / "data.txt"))


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


# --- check_xy ------------------------------------------------------------------------------


def test_check_xy_returns_training_dtypes():
    x, y, one_hot = check_xy(np.ones((3, 2), np.float64), [0, 1, 1.0], "classification", 2)
    assert x.dtype == np.float32 and y.dtype == np.int64 and not one_hot
    x, y, one_hot = check_xy(np.ones((3, 2)), np.eye(3), "classification", 3)
    assert one_hot and y.tolist() == [0, 1, 2]
    _, y, _ = check_xy(np.ones((3, 2)), [[1], [0], [1]], "classification")
    assert y.tolist() == [1, 0, 1]
    _, y, _ = check_xy(np.ones((3, 2)), np.array([True, False, True]), "classification")
    assert y.dtype == np.int64
    _, y, one_hot = check_xy(np.ones((3, 2), np.uint8), [0.5, 1, 2], "regression")
    assert y.shape == (3, 1) and y.dtype == np.float32 and not one_hot


@pytest.mark.parametrize("x,y,kw,match", [
    (np.ones((3, 2)), [0, 1], {}, "x has 3 rows but y has 2"),
    (np.ones((0, 2)), np.zeros(0), {}, "empty"),
    (np.ones(3), [0, 1, 0], {}, "must be 2-D.*reshape\\(-1, 1\\)"),
    (np.ones((3, 2, 2)), [0, 1, 0], {}, "must be 2-D.*flatten"),
    (np.array([[1, 2], [np.nan, np.inf], [3, np.nan]]), [0, 1, 0], {},
     "3 NaN or infinite values \\(first in row 1\\)"),
    (np.ones((3, 2)), [0, -2, 1], {}, "label -2 in row 1 is negative"),
    (np.ones((3, 2)), [0, 1.5, 1], {}, "label 1.5 in row 1 is not a whole number"),
    (np.ones((3, 2)), [0, 1, np.nan], {}, "row 2 is nan"),
    (np.ones((3, 2)), [0, 1, 7], {"n_classes": 3}, "label 7 in row 2 is out of range.*0..2"),
    (np.ones((2, 2)), [[0.5, 0.2], [0, 1]], {}, "one-hot.*row 0"),
    (np.ones((2, 2)), np.eye(2), {"n_classes": 3}, "2 one-hot columns but there are 3"),
    (np.ones((3, 2)), np.ones((3, 2, 1)), {}, "one entry"),
    (np.array([["a", "b"]]), [0], {}, "x must be numeric"),
    (np.ones((2, 2)), ["a", "b"], {}, "y must be numeric"),
    (np.full((2, 2), 1e300), [0, 1], {}, "too large for float32"),
    (np.ones((3, 2)), [0.0, np.inf, 1], {"task": "regression"},
     "1 regression targets are NaN or infinite \\(first in row 1\\)"),
])
def test_check_xy_errors(x, y, kw, match):
    kw = {"task": "classification", **kw}
    with pytest.raises(DataError, match=match) as err:
        check_xy(x, y, where="test data", **kw)
    assert str(err.value).startswith("test data")


def test_check_xy_unknown_task():
    with pytest.raises(ConfigError, match="task"):
        check_xy(np.ones((2, 2)), [0, 1], "ranking")


# --- one check for the loaders, the Trainer and the doctor ----------------------------------

SOFT_NOT_SUMMING_TO_1 = [[0.2, 0.3], [0.5, 0.5]]


def test_rows_that_are_not_distributions_are_refused_by_loader_and_trainer_alike():
    import nnx

    x = np.ones((2, 3), np.float32)
    with pytest.raises(DataError, match="read as one-hot rows.*row 0.*sum 0.5") as loader:
        check_xy(x, SOFT_NOT_SUMMING_TO_1, "classification")
    tr = nnx.Trainer(nnx.mlp([3, 2]), "cross_entropy")
    with pytest.raises(DataError, match="read as one-hot rows.*row 0.*sum 0.5") as trainer:
        tr.fit(x, SOFT_NOT_SUMMING_TO_1, epochs=1)
    assert str(loader.value).split(": ", 1)[1] == str(trainer.value).split(": ", 1)[1]
    # binary cross-entropy: each output is its own yes/no probability, rows need not sum to 1
    tr = nnx.Trainer(nnx.mlp([3, 2]), "bce")
    assert len(tr.fit(x, SOFT_NOT_SUMMING_TO_1, epochs=1, batch_size=2)) == 1


def test_check_xy_with_a_loss_keeps_soft_labels_and_names_the_model():
    x = np.ones((3, 2))
    soft = np.array([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]])
    _, y, one_hot = check_xy(x, soft, loss="cross_entropy", n_out=2)
    assert y.dtype == np.float32 and np.array_equal(y, soft.astype(np.float32)) and not one_hot
    _, y, one_hot = check_xy(x, soft, "classification")  # a loader: labels by argmax
    assert y.tolist() == [1, 0, 0] and one_hot
    _, y, _ = check_xy(x, [0.0, 1.0, 1.0], loss="bce", n_out=1)  # whole numbers: labels
    assert y.dtype == np.int64
    _, y, _ = check_xy(x, [0.2, 1.0, 0.9], loss="bce", n_out=1)  # probabilities, one column
    assert y.shape == (3, 1) and y.dtype == np.float32
    x64, _, _ = check_xy(x, [0, 1, 1], loss="cross_entropy", n_out=2, dtype="float64")
    assert x64.dtype == np.float64
    cases = [
        ({"loss": "cross_entropy", "n_out": 3}, [0, 1, 3],
         "label 3 in row 2 is out of range for 3 classes.*model with 3 output"),
        ({"loss": "cross_entropy", "n_out": 3}, [1, 2, 3], "subtract 1"),
        ({"loss": "bce", "n_out": 1}, [0, 1, 2], "label 2 in row 2 is out of range for 2"),
        ({"loss": "bce", "n_out": 1}, [0.5, 1.5, 0.0], "probabilities in \\[0, 1\\]; row 1"),
        ({"loss": "bce", "n_out": 4}, [0, 1, 3], "shape \\(n, 4\\).*use cross_entropy"),
        ({"loss": "cross_entropy", "n_out": 3}, np.eye(2)[[0, 1, 1]],
         "2 one-hot columns but the model has 3 outputs"),
        ({"loss": "mse", "n_out": 2}, [1.0, 2.0, 3.0], "1 target column"),
        ({"loss": "mse"}, [1e300, 0.0, 1.0], "too large for float32"),
        ({"loss": "cross_entropy", "input_shape": (5,)}, [0, 1, 1], "2 features but the model "
                                                                    "expects 5"),
        ({"loss": "cross_entropy", "input_shape": (2, 1, 1)}, [0, 1, 1],
         "takes images \\(n, 2, 1, 1\\).*x.reshape\\(-1, 2, 1, 1\\)"),
    ]
    for kw, y, match in cases:
        with pytest.raises(DataError, match=match):
            check_xy(x, y, where="test data", **kw)
    with pytest.raises(ConfigError, match="mse is for regression"):
        check_xy(x, [0, 1, 1], "classification", loss="mse")
    with pytest.raises(ConfigError, match="dtype"):
        check_xy(x, [0, 1, 1], "classification", dtype="int32")


def test_images_are_checked_against_the_models_input_shape():
    x = np.zeros((4, 3, 3, 1), np.float32)
    xc, _, _ = check_xy(x, [0, 1, 0, 1], loss="cross_entropy", input_shape=(3, 3, 1))
    assert xc.shape == (4, 3, 3, 1)
    with pytest.raises(DataError, match="input_shape=\\(height, width, channels\\)"):
        check_xy(x, [0, 1, 0, 1], loss="cross_entropy", input_shape=(9,))


def test_check_labels_is_the_doctors_label_rule():
    import nnx
    from nnx.data import check_labels
    from nnx.doctor import check

    assert check_labels([0, 2, 1], n_out=3)[0].tolist() == [0, 2, 1]
    with pytest.raises(DataError, match="y: label 3 in row 0 is out of range"):
        check_labels([3, 0], "y", loss="cross_entropy", n_out=3)
    model = nnx.mlp([2, 3]).init("cpu", 0)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    (f,) = [f for f in check(model, "cross_entropy", x, np.array([3, 0, 1, 2]))
            if f.id == "labels-out-of-range"]
    assert "label 3 in row 0 is out of range for 3 classes" in f.title
    rows = [f for f in check(model, "cross_entropy", x, np.full((4, 3), 0.2))
            if f.id == "labels-out-of-range"]
    assert rows and "read as one-hot rows" in rows[0].title


def test_string_labels_and_empty_image_files_are_data_errors(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.ones((4, 2)), y=np.array(["a", "b", "a", "b"]))
    with pytest.raises(DataError, match="y must be numeric"):
        load_file(tmp_path / "s.npz")
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0))
    with pytest.raises(DataError, match="empty"):
        load_file(tmp_path / "e.npz")


def test_arrays_that_cannot_come_to_the_host_are_data_errors():
    import nnx

    torch = pytest.importorskip("torch")
    tr = nnx.Trainer(nnx.mlp([2, 2]), device="numpy")
    x = torch.ones((4, 2), requires_grad=True)
    with pytest.raises(DataError, match="training data x is not a numeric array.*requires grad"):
        tr.fit(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=2)
    with pytest.raises(DataError, match="training data x is not a numeric array"):
        tr.fit([[1.0, 2.0], [3.0]], [0, 1], epochs=1)


def test_the_doctors_duplicate_mask_is_the_duplicate_finder():
    from nnx.doctor import duplicate_rows

    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, (300, 3)).astype(np.float32)
    b = rng.integers(0, 4, (200, 3)).astype(np.float32)
    found = find_duplicates(a, b, max_examples=len(b))
    mask = duplicate_rows(a, b)
    assert mask.sum() == found.count > 0 and mask[found.examples[:, 1]].all()
    assert not duplicate_rows(a, np.zeros((0, 3))).size


# --- preparation helpers -------------------------------------------------------------------


def test_standardizer_fits_on_training_data_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, (200, 3))
    train[:, 2] = 7.0  # constant feature: centred, not divided by zero
    s = Standardizer().fit(train)
    z = s.transform(train)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1, rtol=1e-4)
    assert s.std[2] == 1.0 and np.all(z[:, 2] == 0)
    test = rng.normal(5.0, 3.0, (10, 3))
    np.testing.assert_allclose(s.transform(test), (test - s.mean) / s.std, rtol=1e-5)
    np.testing.assert_allclose(s.inverse_transform(s.transform(test)), test, rtol=1e-5)
    again = Standardizer(**s.state())
    np.testing.assert_array_equal(again.transform(test), s.transform(test))
    np.testing.assert_array_equal(Standardizer().fit_transform(train), z)


def test_standardizer_errors():
    with pytest.raises(ConfigError, match="fit"):
        Standardizer().transform(np.ones((2, 2)))
    with pytest.raises(DataError, match="fitted on 2 features"):
        Standardizer().fit(np.ones((3, 2))).transform(np.ones((3, 5)))
    with pytest.raises(DataError):
        Standardizer().fit(np.ones((0, 2)))


def test_to_unit_range():
    x = np.array([[0, 128, 255]], np.uint8)
    u = to_unit_range(x)
    assert u.dtype == np.float32
    assert u.tolist() == [[0.0, np.float32(128) / np.float32(255), 1.0]]
    assert to_unit_range(np.array([0, 8, 16]), 16).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(DataError, match="outside"):
        to_unit_range(np.array([0, 300]), 255)
    with pytest.raises(ConfigError, match="max_value"):
        to_unit_range(np.array([0.5]))


def test_find_duplicates_between_sets():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (2000, 784), dtype=np.uint8)
    test = rng.integers(0, 256, (500, 784), dtype=np.uint8)
    test[[3, 10, 400]] = train[[7, 1999, 0]]
    found = find_duplicates(train, test)
    assert found.count == 3
    assert found.examples.tolist() == [[7, 3], [1999, 10], [0, 400]]
    assert find_duplicates(train, test, max_examples=1).examples.shape == (1, 2)
    assert find_duplicates(train.astype(np.float32) / 255, test.astype(np.float32) / 255) \
        .count == 3
    assert find_duplicates(train[:, :100], test[:, :100]).count == 3
    assert find_duplicates(train[:5], test[:3]).count == 0


def test_find_duplicates_exactness():
    a = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], np.float32)
    b = np.array([[-0.0, 1.0, 2.0], [1.0, 2.0, 3.0 + 1e-6], [1, 2, 3]], np.float32)
    found = find_duplicates(a, b)
    assert found.count == 2 and found.examples.tolist() == [[0, 0], [1, 2]]
    assert find_duplicates(a, b.astype(np.float64)).count == 2  # compared in a common dtype
    with pytest.raises(DataError, match="3 and 4 features"):
        find_duplicates(a, np.ones((2, 4)))


def test_find_duplicates_within_one_set():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    x[[4, 8, 9]] = x[[1, 1, 2]]
    found = find_duplicates(x)
    assert found.count == 3 and found.examples.tolist() == [[1, 4], [1, 8], [2, 9]]
    assert find_duplicates(np.arange(12).reshape(4, 3)).count == 0


def test_find_duplicates_on_mnist_sized_arrays():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (60000, 784), dtype=np.uint8)
    test = rng.integers(0, 256, (10000, 784), dtype=np.uint8)
    test[::1000] = train[:10]
    found = find_duplicates(train, test)
    assert found.count == 10 and found.examples[0].tolist() == [0, 0]
