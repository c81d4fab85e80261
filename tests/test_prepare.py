"""Preparing features (nnx.data.prepare): the Standardizer, fitted on training data only,
and scaling to the unit range.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnx.data import Standardizer, to_unit_range
from nnx.errors import ConfigError, DataError


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
