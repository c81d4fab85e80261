"""nnx.data.load and the built-in sets: the synthetic generators (shapes, dtypes,
determinism, options), the bundled digits, the Dataset type and the stratified split.

The user's files are in test_data_files.py, IDX files in test_idx.py, MNIST in
test_mnist.py and test_download.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.data import DATASETS, Dataset, load, load_digits, spirals, stratified_split
from nnx.data.digits import read_digits
from nnx.data.synthetic import GENERATORS
from nnx.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "cache"))


def _same(a: Dataset, b: Dataset) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("x_train", "y_train", "x_test", "y_test"))


# --- synthetic sets ---------------------------------------------------------------------------


SYNTHETIC = {
    # name: (kwargs, features, classes or None for regression)
    "spirals": ({"n": 300, "classes": 3}, 2, 3),
    "moons": ({"n": 200}, 2, 2),
    "circles": ({"n": 200}, 2, 2),
    "xor": ({"n": 200}, 2, 2),
    "blobs": ({"n": 200, "classes": 4, "features": 3}, 3, 4),
    "regression": ({"n": 200, "features": 4, "outputs": 2}, 4, None),
}


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


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_loaders_shapes_dtypes_and_determinism(name):
    kwargs, features, classes = SYNTHETIC[name]
    ds = load(name, seed=3, **kwargs)
    n = kwargs["n"]
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == n
    assert ds.x_test.shape[0] == round(0.2 * n)
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == features == ds.n_features
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert np.isfinite(ds.x_train).all()
    if classes is None:
        assert ds.task == "regression" and ds.n_classes is None
        assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (len(ds.x_train), 2)
    else:
        assert ds.task == "classification" and ds.n_classes == classes
        assert ds.y_train.dtype == np.int64 and ds.y_train.shape == (len(ds.x_train),)
        assert set(np.unique(ds.y_train)) == set(range(classes))
    again = load(name, seed=3, **kwargs)
    other = load(name, seed=4, **kwargs)
    for a, b in ((ds.x_train, again.x_train), (ds.y_train, again.y_train),
                 (ds.x_test, again.x_test)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ds.x_train, other.x_train)


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


def test_synthetic_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="classes"):
        nnx.data.spirals(classes=1)
    with pytest.raises(ConfigError, match="n must be"):
        nnx.data.moons(n=1)
    with pytest.raises(ConfigError, match="options are"):
        load("spirals", wiggle=3)
    with pytest.raises(ConfigError, match="unknown dataset.*digits"):
        load("cifar")


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


# --- load() and Dataset -----------------------------------------------------------------------


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


# --- digits and the stratified split ----------------------------------------------------------


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


def test_digits_has_1797_rows_and_a_stratified_split():
    ds = load("digits")
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.shape[1] == 64 and ds.n_classes == 10
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    whole = np.bincount(np.r_[ds.y_train, ds.y_test], minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    # every class loses the same share (within one example) to the test split
    np.testing.assert_allclose(test, whole * len(ds.y_test) / 1797, atol=1.0)
    assert ds.meta["image_shape"] == (8, 8)


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
