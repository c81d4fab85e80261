"""Initialisers: documented spreads, one seed gives the same weights everywhere, ``auto``."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.initializers import INITIALIZERS, get_initializer


def _init(layer, backend, dtype, seed=0):
    layer.init(backend, backend.rng(seed), dtype)
    return layer


FAN = 500
DOCUMENTED = {  # name -> (mean, std) on a FAN x FAN weight
    "zeros": (0.0, 0.0),
    "constant": (0.1, 0.0),
    "normal": (0.0, 0.01),
    "uniform": (0.0, 0.05 / math.sqrt(3)),
    "xavier_normal": (0.0, math.sqrt(2 / (2 * FAN))),
    "xavier_uniform": (0.0, math.sqrt(6 / (2 * FAN)) / math.sqrt(3)),
    "he_normal": (0.0, math.sqrt(2 / FAN)),
    "he_uniform": (0.0, math.sqrt(6 / FAN) / math.sqrt(3)),
    "lecun_normal": (0.0, math.sqrt(1 / FAN)),
}


def test_every_initializer_is_documented_here():
    assert set(DOCUMENTED) == set(INITIALIZERS)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_initializer_std(name):
    mean, std = DOCUMENTED[name]
    layer = _init(nnx.Dense(FAN, FAN, init=name), backends.get("numpy"), "float64")
    w = np.asarray(layer.params["w"])
    assert w.shape == (FAN, FAN)
    if std == 0.0:
        np.testing.assert_array_equal(w, mean)
    else:
        assert abs(w.std() - std) < 0.1 * std, f"{name}: std {w.std():.4g}, documented {std:.4g}"
        assert abs(w.mean()) < 0.1 * std


def test_same_seed_same_weights_on_every_backend(backend):
    ref = nnx.mlp([7, 16, 5], activation="tanh").init("numpy", 123, "float32").get_weights()
    got = nnx.mlp([7, 16, 5], activation="tanh").init(backend, 123, "float32").get_weights()
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    other = nnx.mlp([7, 16, 5], activation="tanh").init(backend, 124, "float32").get_weights()
    assert not np.array_equal(other["dense_0.w"], ref["dense_0.w"])


@pytest.mark.parametrize("activation,expected", [
    ("relu", "he_normal"), ("leaky_relu", "he_normal"), ("tanh", "xavier_normal"),
    ("sigmoid", "xavier_normal")])
def test_auto_init_follows_the_activation(activation, expected):
    assert get_initializer("auto", nnx.get_activation(activation).family)[0] == expected
    model = nnx.mlp([FAN, FAN, 10], activation=activation).init("numpy", 0, "float64")
    w = model.get_weights()["dense_0.w"]
    std = math.sqrt(2 / FAN) if expected == "he_normal" else math.sqrt(2 / (2 * FAN))
    assert abs(w.std() - std) < 0.1 * std
