"""Learning-rate range test: the model is untouched and the suggestion is sensible."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.doctor import clone_model, lr_find
from nnx.errors import ConfigError


def _whitened_regression(n=512, d=8, seed=0):
    """y = x @ w_true + noise with whitened x: the MSE Hessian of a linear model is 2 I."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x = (x - x.mean(0)) / x.std(0)
    w = rng.standard_normal((d, 1))
    y = x @ w + 0.1 * rng.standard_normal((n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def _blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    y = rng.integers(0, 3, n)
    x = centers[y] + rng.standard_normal((n, 2))
    return x.astype(np.float32), y.astype(np.int64)


def test_parameters_and_buffers_unchanged():
    x, y = _blobs()
    model = nnx.mlp([2, 32, 3], batchnorm=True, dropout=0.1).init("cpu", 0)
    before = model.get_weights()
    result = lr_find(model, "cross_entropy", x, y, steps=60, batch_size=32)
    after = model.get_weights()
    assert set(before) == set(after)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert all(not np.any(model.backend.to_numpy(g)) for _, _, gs in model.parameters()
               for g in gs.values())
    assert result.lrs.size == result.losses.size == result.smoothed.size


def test_clone_is_independent():
    model = nnx.mlp([3, 4, 2]).init("cpu", 1)
    clone = clone_model(model)
    assert clone is not model and clone.layers[0] is not model.layers[0]
    for k, v in model.get_weights().items():
        np.testing.assert_array_equal(v, clone.get_weights()[k])
    clone.layers[0].params["w"] += 1.0
    assert not np.array_equal(model.get_weights()["dense_0.w"],
                              clone.get_weights()["dense_0.w"])


def test_suggestion_below_divergence_on_linear_regression(tmp_path):
    # gradient descent on this quadratic diverges above lr = 2 / lambda_max = 1;
    # a useful learning rate lies a little below that, within a factor of 100
    x, y = _whitened_regression()
    model = nnx.Sequential([nnx.Dense(8, 1)]).init("cpu", 0)
    path = tmp_path / "lr.png"
    result = lr_find(model, "mse", x, y, start_lr=1e-5, end_lr=100.0, steps=200,
                     batch_size=512, plot=str(path))
    assert 1e-2 <= result.suggestion <= 1.0, str(result)
    assert result.stopped_early  # the loss diverges well before lr = 100
    assert result.lrs[-1] < 100.0
    assert path.exists() and path.stat().st_size > 1000
    assert "suggested lr" in str(result) and result.rule


def test_suggestion_band_on_classification():
    x, y = _blobs()
    model = nnx.mlp([2, 32, 3]).init("cpu", 0)
    sgd = lr_find(model, "cross_entropy", x, y, optimizer="sgd", steps=150)
    adam = lr_find(model, "cross_entropy", x, y, optimizer="adam", steps=150)
    assert 1e-3 <= sgd.suggestion <= 3.0, str(sgd)
    assert 1e-4 <= adam.suggestion <= 0.1, str(adam)
    assert adam.suggestion < sgd.suggestion


def test_runs_on_a_non_default_device():
    pytest.importorskip("array_api_strict")
    x, y = _blobs(200)
    model = nnx.mlp([2, 8, 3]).init("strict:device1", 0)
    before = model.get_weights()
    result = lr_find(model, "cross_entropy", x, y, steps=30, batch_size=16)
    assert np.isfinite(result.suggestion)
    np.testing.assert_array_equal(before["dense_0.w"], model.get_weights()["dense_0.w"])


def test_bad_arguments():
    x, y = _blobs(50)
    model = nnx.mlp([2, 4, 3]).init("cpu", 0)
    with pytest.raises(ConfigError):
        lr_find(model, "cross_entropy", x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ConfigError):
        lr_find(nnx.mlp([2, 4, 3]), "cross_entropy", x, y)
