"""One table of every layer, activation and loss, checked on every backend.

Each layer case runs through shape, device and dtype checks on every backend
(float32, and float64 where the device has it) and a float64 gradient check on
the host. Each loss case gets the same checks plus a central-difference check
of ``d_output``. Then the behaviour that a gradient check cannot see: loss
stability at extreme logits, dropout statistics, BatchNorm running statistics,
and the initialisers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pytest

import backends
import nnx
from nnx.activations import ACTIVATIONS
from nnx.init import INITIALIZERS, get_initializer
from nnx.losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy

GRAD_RTOL = 1e-6
BATCH = 6


@dataclass
class LayerCase:
    id: str
    make: Any  # () -> Layer (uninitialised)
    n_in: int
    n_out: int
    train: bool = False
    model: bool = False  # a whole Sequential: checked with nnx.gradcheck


def _layer_cases() -> list[LayerCase]:
    cases = [
        LayerCase("dense", lambda: nnx.Dense(5, 3), 5, 3),
        LayerCase("dense_nobias", lambda: nnx.Dense(5, 3, bias=False, init="xavier_normal"), 5, 3),
    ]
    names = sorted(set(ACTIVATIONS) - {"linear"})  # "linear" is the same object as identity
    for spec in [*names, "leaky_relu:0.2", "elu:0.5"]:
        cases.append(LayerCase(f"act_{spec}", lambda s=spec: nnx.ActivationLayer(s), 4, 4))
    cases += [
        LayerCase("mixed", lambda: nnx.MixedActivation(
            [("relu", 2), ("tanh", 2), "sin", "leaky_relu:0.2"]), 6, 6),
        LayerCase("dropout_train", lambda: nnx.Dropout(0.3), 5, 5, train=True),
        LayerCase("dropout_eval", lambda: nnx.Dropout(0.3), 5, 5, train=False),
        LayerCase("batchnorm_train", lambda: nnx.BatchNorm(4), 4, 4, train=True),
        LayerCase("batchnorm_eval", lambda: nnx.BatchNorm(4), 4, 4, train=False),
        LayerCase("mlp", lambda: nnx.mlp([4, 8, 6, 3], activation="tanh"), 4, 3, model=True),
        LayerCase("mlp_batchnorm", lambda: nnx.mlp([4, 8, 3], batchnorm=True), 4, 3,
                  train=True, model=True),
        LayerCase("mlp_dropout", lambda: nnx.mlp([4, 8, 3], activation="gelu", dropout=0.2),
                  4, 3, model=True),
    ]
    return cases


LAYER_CASES = _layer_cases()


@dataclass
class LossCase:
    id: str
    loss: Any
    k: int  # output units
    target: Any  # (host rng, n) -> (host array, dtype name)


def _labels(rng, n, k=3):
    return rng.integers(0, k, n), "int64"


def _onehot(rng, n, k=3):
    return np.eye(k)[rng.integers(0, k, n)], "float"


LOSS_CASES = [
    LossCase("ce_labels", SoftmaxCrossEntropy(), 3, _labels),
    LossCase("ce_onehot", SoftmaxCrossEntropy(), 3, _onehot),
    LossCase("bce_n", SigmoidBinaryCrossEntropy(), 1,
             lambda rng, n: (rng.integers(0, 2, n).astype(float), "float")),
    LossCase("bce_nk", SigmoidBinaryCrossEntropy(), 4,
             lambda rng, n: (rng.integers(0, 2, (n, 4)).astype(float), "float")),
    LossCase("mse", MeanSquaredError(), 2, lambda rng, n: (rng.standard_normal((n, 2)), "float")),
]


def _init(layer, backend, dtype, seed=0):
    if isinstance(layer, nnx.Sequential):
        return layer.init(backend, seed, dtype)
    layer.init(backend, backend.rng(seed), dtype)
    return layer


def _input(backend, n_in, dtype, seed=1, n=BATCH):
    return backend.asarray(np.random.default_rng(seed).standard_normal((n, n_in)), dtype)


def _same_device(a, b) -> bool:
    return array_api_compat.device(a) == array_api_compat.device(b)


def _rel_error(a, b) -> float:
    den = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)
    return float(np.max(np.abs(a - b)) / den)


# --- layers: shape, device, dtype on every backend ---------------------------

@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.id)
def test_layer_shape_device_dtype(case, backend, float_dtypes):
    for dtype in float_dtypes:
        layer = _init(case.make(), backend, dtype)
        x = _input(backend, case.n_in, dtype)
        y, backward = layer.forward(x, train=case.train)
        assert tuple(y.shape) == (BATCH, case.n_out)
        assert _same_device(y, x), f"{case.id} output left the input's device"
        assert y.dtype == x.dtype, f"{case.id} changed dtype {x.dtype} -> {y.dtype}"
        dy = backend.asarray(np.ones((BATCH, case.n_out)), dtype)
        dx = backward(dy)
        assert tuple(dx.shape) == (BATCH, case.n_in)
        assert _same_device(dx, x) and dx.dtype == x.dtype
        for name, p in layer.params.items():
            g = layer.grads[name]
            assert tuple(g.shape) == tuple(p.shape), name
            assert _same_device(p, x) and _same_device(g, x), name
            assert p.dtype == x.dtype and g.dtype == x.dtype, name
        for name, s in layer.state.items():
            assert _same_device(s, x) and s.dtype == x.dtype, name


# --- layers: float64 gradient check on the host ------------------------------

def _numeric_layer_grads(layer, x, g, train, reset, h=1e-6):
    """Central differences of ``sum(forward(x) * g)`` w.r.t. every parameter and x."""
    def value():
        reset()
        return float(np.sum(np.asarray(layer.forward(x, train=train)[0]) * g))

    out = {}
    targets = [(f"param {k}", p) for k, p in layer.params.items()] + [("input", x)]
    for key, arr in targets:
        flat = arr.reshape(-1)
        grad = np.zeros(flat.shape[0])
        for i in range(flat.shape[0]):
            old = float(flat[i])
            flat[i] = old + h
            fp = value()
            flat[i] = old - h
            fm = value()
            flat[i] = old
            grad[i] = (fp - fm) / (2 * h)
        out[key] = grad.reshape(arr.shape)
    return out


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if not c.model], ids=lambda c: c.id)
def test_layer_gradient_float64(case):
    host = backends.get("numpy")
    layer = _init(case.make(), host, "float64", seed=3)
    if "b" in layer.params:  # a non-zero bias, so its gradient is not checked at a special point
        layer.params["b"] = layer.params["b"] + 0.1
    if "gamma" in layer.params:
        layer.params["gamma"] = layer.params["gamma"] * 1.5
        layer.params["beta"] = layer.params["beta"] - 0.2
    rng = np.random.default_rng(4)
    x = host.asarray(rng.standard_normal((BATCH, case.n_in)) * 1.5, "float64")
    g = rng.standard_normal((BATCH, case.n_out))
    rng_state = layer.rng.get_state() if getattr(layer, "rng", None) is not None else None
    saved_state = dict(layer.state)

    def reset():
        layer.state = dict(saved_state)
        if rng_state is not None:
            layer.rng.set_state(rng_state)

    reset()
    layer.zero_grads()
    _, backward = layer.forward(x, train=case.train)
    dx = backward(host.asarray(g, "float64"))
    analytic = {f"param {k}": np.asarray(v) for k, v in layer.grads.items()}
    analytic["input"] = np.asarray(dx)
    numeric = _numeric_layer_grads(layer, x, g, case.train, reset)
    for key in numeric:
        err = _rel_error(analytic[key], numeric[key])
        assert err < GRAD_RTOL, f"{case.id}: gradient of {key} off by {err:.2e}"
    if not case.train:  # nnx's own single-layer check (evaluation mode) agrees
        assert nnx.check_layer(layer) < 1e-5


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.model], ids=lambda c: c.id)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_model_gradcheck_float64(case, loss):
    model = case.make().init("numpy", 5, "float64")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, case.n_in))
    y = rng.integers(0, case.n_out, 8) if loss == "cross_entropy" else rng.standard_normal(
        (8, case.n_out))
    report = nnx.gradcheck(model, loss, x, y)
    assert set(report.errors) == set(model.params)
    assert report.ok, str(report)
    assert max(report.errors.values()) < GRAD_RTOL


# --- losses -----------------------------------------------------------------

def _loss_inputs(case, backend, dtype, seed=7, n=BATCH):
    rng = np.random.default_rng(seed)
    out = backend.asarray(rng.standard_normal((n, case.k)) * 2.0, dtype)
    t, tdt = case.target(rng, n)
    return out, backend.asarray(t, dtype if tdt == "float" else tdt)


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.id)
def test_loss_shape_device_dtype(case, backend, float_dtypes):
    for dtype in float_dtypes:
        out, target = _loss_inputs(case, backend, dtype)
        value, d_out = case.loss(out, target)
        assert tuple(value.shape) == ()
        assert tuple(d_out.shape) == tuple(out.shape)
        assert _same_device(value, out) and _same_device(d_out, out)
        assert value.dtype == out.dtype and d_out.dtype == out.dtype
        assert math.isfinite(float(backend.to_numpy(value)))


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.id)
def test_loss_gradient_float64(case):
    host = backends.get("numpy")
    out, target = _loss_inputs(case, host, "float64")
    _, d_out = case.loss(out, target)
    h = 1e-6
    flat = out.reshape(-1)
    numeric = np.zeros(flat.shape[0])
    for i in range(flat.shape[0]):
        old = float(flat[i])
        flat[i] = old + h
        fp = float(case.loss(out, target)[0])
        flat[i] = old - h
        fm = float(case.loss(out, target)[0])
        flat[i] = old
        numeric[i] = (fp - fm) / (2 * h)
    err = _rel_error(np.asarray(d_out).reshape(-1), numeric)
    assert err < GRAD_RTOL, f"{case.id}: d_output off by {err:.2e}"


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if c.id != "mse"], ids=lambda c: c.id)
def test_loss_finite_at_extreme_logits(case, backend):
    rng = np.random.default_rng(8)
    out = backend.asarray(rng.choice([-1000.0, 1000.0], (BATCH, case.k)), "float32")
    t, tdt = case.target(rng, BATCH)
    target = backend.asarray(t, "float32" if tdt == "float" else tdt)
    value, d_out = case.loss(out, target)
    assert math.isfinite(float(backend.to_numpy(value)))
    assert np.all(np.isfinite(backend.to_numpy(d_out)))


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "onehot"])
def test_cross_entropy_confident_predictions(backend, onehot):
    loss = SoftmaxCrossEntropy()
    logits = backend.asarray([[1000.0, -1000.0, -1000.0]] * 2, "float32")
    for label, expected in ((0, 0.0), (1, 2000.0)):
        labels = np.array([label, label])
        target = (backend.asarray(np.eye(3)[labels], "float32") if onehot
                  else backend.asarray(labels, "int64"))
        value, d_out = loss(logits, target)
        assert float(backend.to_numpy(value)) == pytest.approx(expected, abs=1e-3)
        d = backend.to_numpy(d_out)
        assert np.all(np.isfinite(d))
        # gradient of the mean: (softmax - onehot) / batch
        np.testing.assert_allclose(d, (np.eye(3)[[0, 0]] - np.eye(3)[labels]) / 2, atol=1e-6)


@pytest.mark.parametrize("shape", [(2,), (2, 1)], ids=["n", "n1"])
def test_bce_confident_predictions(backend, shape):
    loss = SigmoidBinaryCrossEntropy()
    logits = backend.asarray([[1000.0], [-1000.0]], "float32")
    for target, expected in (([1.0, 0.0], 0.0), ([0.0, 1.0], 1000.0)):
        t = backend.asarray(np.reshape(target, shape), "float32")
        value, d_out = loss(logits, t)
        assert float(backend.to_numpy(value)) == pytest.approx(expected, abs=1e-3)
        d = backend.to_numpy(d_out)
        np.testing.assert_allclose(d[:, 0], (np.array([1.0, 0.0]) - target) / 2, atol=1e-6)


# --- dropout ------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_train_statistics(backend, p):
    layer = _init(nnx.Dropout(p), backend, "float32")
    x = backend.asarray(np.ones((400, 50)), "float32")
    y, backward = layer.forward(x, train=True)
    yh = backend.to_numpy(y)
    dropped = np.mean(yh == 0.0)
    assert abs(dropped - p) < 0.02, f"dropped {dropped:.3f} of units, expected {p}"
    np.testing.assert_allclose(yh[yh != 0.0], 1.0 / (1.0 - p), rtol=1e-6)
    # the backward uses the same mask
    dx = backend.to_numpy(backward(backend.asarray(np.full((400, 50), 2.0), "float32")))
    np.testing.assert_allclose(dx, 2.0 * yh, rtol=1e-6)
    # a second step draws a new mask
    y2 = backend.to_numpy(layer.forward(x, train=True)[0])
    assert not np.array_equal(y2, yh)


def test_dropout_eval_is_identity(backend):
    layer = _init(nnx.Dropout(0.5), backend, "float32")
    xh = np.random.default_rng(0).standard_normal((20, 7))
    y, backward = layer.forward(backend.asarray(xh, "float32"), train=False)
    np.testing.assert_array_equal(backend.to_numpy(y), xh.astype(np.float32))
    dy = backend.asarray(xh * 3, "float32")
    np.testing.assert_array_equal(backend.to_numpy(backward(dy)), (xh * 3).astype(np.float32))


# --- batchnorm ----------------------------------------------------------------

def test_batchnorm_running_statistics(backend):
    n = 3
    bn = _init(nnx.BatchNorm(n), backend, "float32")
    rng = np.random.default_rng(0)
    mean, std = np.array([2.0, -1.0, 0.5]), np.array([3.0, 0.5, 1.0])
    host = mean + std * rng.standard_normal((4000, n))
    for i in range(100):
        bn.forward(backend.asarray(host[i * 40:(i + 1) * 40], "float32"), train=True)
    rm = backend.to_numpy(bn.state["running_mean"])
    rv = backend.to_numpy(bn.state["running_var"])
    assert np.all(np.abs(rm - mean) < 0.25 * std), rm
    np.testing.assert_allclose(rv, std**2, rtol=0.2)
    # evaluation normalises with the running statistics, not the batch's
    xe = rng.standard_normal((5, n)) * 10
    ye = backend.to_numpy(bn.forward(backend.asarray(xe, "float32"), train=False)[0])
    np.testing.assert_allclose(ye, (xe - rm) / np.sqrt(rv + bn.eps), rtol=1e-4, atol=1e-4)
    # and does not change them
    np.testing.assert_array_equal(backend.to_numpy(bn.state["running_mean"]), rm)


def test_batchnorm_train_normalises_the_batch(backend):
    bn = _init(nnx.BatchNorm(4), backend, "float32")
    xh = 5.0 + 3.0 * np.random.default_rng(1).standard_normal((64, 4))
    y = backend.to_numpy(bn.forward(backend.asarray(xh, "float32"), train=True)[0])
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=0), 1.0, rtol=1e-3)


# --- initialisers ---------------------------------------------------------------

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
