"""One table of every layer, activation and loss, each run through the same checks.

Layers (Dense, one ActivationLayer per activation, MixedActivation, Dropout and
BatchNorm in training and evaluation, Sequential, mlp; Conv2D, the pools,
Flatten, BatchNorm and Dropout on images (batch, height, width, channels), cnn)
and losses (softmax
cross-entropy with labels, one-hot and soft targets, sigmoid binary
cross-entropy with ``(n,)`` and ``(n, k)`` targets, MSE) go through, on every
backend:

- output shape; output, input gradient and parameter gradients on the input's
  device with the input's dtype (float32, and float64 where the device has it);
- values equal to a NumPy float64 reference within a dtype tolerance;
- a float64 central-difference check of every gradient, computed on the device
  itself (relative error below 1e-6); whole models also through ``nnx.gradcheck``.

Activations also pass ``check_derivative`` and stay finite at +-1000; losses
stay finite and exact on logits of +-1000. Dropout and BatchNorm have their
statistics checked below the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from array_api_compat import device as device_of

import nnx
from nnx import backends
from nnx.activations import ACTIVATIONS, check_derivative, get_activation
from nnx.gradcheck import GRAD_FLOOR
from nnx.layers import (
    ActivationLayer,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    MixedActivation,
    Sequential,
)
from nnx.losses import get_loss

BATCH = 4
#: float64 gradients: central differences with step H agree within GRAD_RTOL
GRAD_RTOL = 1e-6
H = 1e-6
#: a result in this dtype agrees with the NumPy float64 reference within this,
#: relative to the array's largest entry or REF_FLOOR
REF_RTOL = {"float32": 2e-5, "float64": 1e-10}
REF_FLOOR = 0.1

# --- the table ------------------------------------------------------------------------

#: every built-in activation (aliases once) plus non-default parameters
ACTIVATION_SPECS = sorted({a.spec for a in ACTIVATIONS.values()}) + ["leaky_relu:0.2",
                                                                      "elu:0.5"]


@dataclass(frozen=True)
class LayerCase:
    id: str
    make: Callable[[], Layer]
    train: bool = False
    #: run a few training batches first (BatchNorm evaluation uses what they leave)
    warmup: bool = False
    #: one example's input and output shapes, for layers whose sizes do not say them
    shape: tuple = ()
    out: tuple = ()


LAYERS = [
    LayerCase("dense", lambda: Dense(3, 4)),
    LayerCase("dense-nobias", lambda: Dense(3, 4, bias=False, init="xavier_uniform")),
    *[LayerCase(f"act-{s}", lambda s=s: ActivationLayer(s)) for s in ACTIVATION_SPECS],
    LayerCase("mixed", lambda: MixedActivation([("relu", 2), "tanh", "sin", "leaky_relu:0.2"])),
    LayerCase("dropout-train", lambda: Dropout(0.3), train=True),
    LayerCase("dropout-eval", lambda: Dropout(0.3)),
    LayerCase("batchnorm-train", lambda: BatchNorm(3), train=True),
    LayerCase("batchnorm-eval", lambda: BatchNorm(3), warmup=True),
    LayerCase("sequential", lambda: Sequential([
        Dense(3, 5), BatchNorm(5), ActivationLayer("tanh"), Dropout(0.2), Dense(5, 2)]),
        train=True),
    LayerCase("mlp", lambda: nnx.mlp([3, 5, 4, 2], activation=["tanh", "sigmoid"])),
    LayerCase("mlp-mixed-bn", lambda: nnx.mlp([3, 6, 2], activation="mixed:tanh,sin,softplus",
                                              batchnorm=True), train=True),
    LayerCase("conv-same", lambda: Conv2D(3, 3, in_channels=2), shape=(5, 4, 2), out=(5, 4, 3)),
    LayerCase("conv-valid-stride-nobias", lambda: Conv2D(2, 2, 2, "valid", bias=False,
                                                         init="xavier_uniform", in_channels=2),
              shape=(5, 5, 2), out=(2, 2, 2)),
    LayerCase("conv-pad1-stride2", lambda: Conv2D(2, 3, 2, 1, in_channels=1), shape=(6, 5, 1),
              out=(3, 3, 2)),
    LayerCase("maxpool", lambda: MaxPool2D(2), shape=(4, 5, 2), out=(2, 2, 2)),
    LayerCase("maxpool-overlap", lambda: MaxPool2D(3, 1), shape=(4, 4, 1), out=(2, 2, 1)),
    LayerCase("avgpool", lambda: AvgPool2D(2, 1), shape=(3, 3, 2), out=(2, 2, 2)),
    LayerCase("globalavgpool", lambda: GlobalAvgPool2D(), shape=(3, 4, 2), out=(2,)),
    LayerCase("flatten", lambda: Flatten(), shape=(2, 3, 2), out=(12,)),
    LayerCase("batchnorm-images-train", lambda: BatchNorm(2), train=True, shape=(3, 3, 2),
              out=(3, 3, 2)),
    LayerCase("batchnorm-images-eval", lambda: BatchNorm(2), warmup=True, shape=(3, 3, 2),
              out=(3, 3, 2)),
    LayerCase("dropout-maps-train", lambda: Dropout(0.3), train=True, shape=(3, 3, 2),
              out=(3, 3, 2)),
    LayerCase("cnn", lambda: nnx.cnn((6, 6, 1), 2, filters=(2, 3), dense=4), train=True,
              shape=(6, 6, 1), out=(2,)),
    LayerCase("cnn-bn", lambda: nnx.cnn((4, 4, 2), 2, filters=(2,), dense=3, dropout=0.0,
                                        batchnorm=True), train=True, shape=(4, 4, 2), out=(2,)),
]
MODELS = [c for c in LAYERS if c.id in ("sequential", "mlp", "mlp-mixed-bn", "cnn", "cnn-bn")]


@dataclass(frozen=True)
class LossCase:
    id: str
    loss: str
    shape: tuple
    target: str  # labels | onehot | soft | binary | real


LOSSES = [
    LossCase("ce-labels", "cross_entropy", (5, 3), "labels"),
    LossCase("ce-onehot", "cross_entropy", (5, 3), "onehot"),
    LossCase("ce-soft", "cross_entropy", (5, 3), "soft"),
    LossCase("bce-(n,)", "bce", (5, 1), "labels"),
    LossCase("bce-(n,k)", "bce", (5, 3), "binary"),
    LossCase("mse", "mse", (5, 2), "real"),
    LossCase("mse-(n,)", "mse", (5, 1), "real-vector"),
]


def ids(cases):
    return [c.id for c in cases]


# --- helpers --------------------------------------------------------------------------

def leaves(layer):
    """The layers that own parameters, in order (a Sequential's members)."""
    if isinstance(layer, Sequential):
        return [leaf for la in layer.layers for leaf in leaves(la)]
    return [layer]


class FixedMasks:
    """Stands in for a Dropout generator: one host-drawn array per shape, so masks are
    the same on every backend and on every call (central differences need that)."""

    def __init__(self, backend):
        self.backend, self.drawn = backend, {}

    def uniform(self, shape, dtype):
        if tuple(shape) not in self.drawn:
            host = np.random.default_rng(len(self.drawn) + 1).random(shape)
            self.drawn[tuple(shape)] = self.backend.asarray(host, dtype)
        return self.drawn[tuple(shape)]


def host_input(width, seed=0, rows=BATCH):
    """Normal inputs kept 0.2 away from 0, where ReLU-like activations have a kink;
    ``width`` is a feature count or one example's shape."""
    x = np.random.default_rng(seed).standard_normal((rows, *np.atleast_1d(width)))
    return np.sign(x) * (0.2 + np.abs(x))


def build(case, backend, dtype):
    layer = case.make()
    layer.init(backend, np.random.default_rng(0), dtype)
    for la in leaves(layer):
        if isinstance(la, Dropout):
            la.rng = FixedMasks(backend)
    width = case.shape or layer.n_in or 3
    if case.warmup:
        for i in range(3):
            layer.forward(backend.asarray(2.0 * host_input(width, 10 + i, 8) + 1.0, dtype),
                          train=True)
    return layer, width


def run_layer(case, backend, dtype):
    """Forward and backward once: (layer, x, y, dx, grads, upstream gradient on the host)."""
    layer, width = build(case, backend, dtype)
    x = backend.asarray(host_input(width), dtype)
    layer.zero_grads()
    y, backward = layer.forward(x, train=case.train)
    g = np.random.default_rng(2).standard_normal(tuple(y.shape))
    dx = backward(backend.asarray(g, dtype))
    grads = {f"{la.name}.{k}": la.grads[k] for la in leaves(layer) for k in la.params}
    return layer, x, y, dx, grads, g


def rel_error(a, b, floor=GRAD_FLOOR) -> float:
    """max |a - b| / max(|a|, |b|, floor) over the whole array, as nnx.gradcheck measures:
    relative, except for arrays of entries all below ``floor`` (a zero gradient)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), floor)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def central_differences(f, p):
    """d f / d p for a host array ``p``, one entry at a time."""
    grad = np.zeros_like(p)
    for i in range(p.size):
        q = p.copy()
        q.flat[i] += H
        fp = f(q)
        q.flat[i] -= 2 * H
        grad.flat[i] = (fp - f(q)) / (2 * H)
    return grad


def assert_on(backend, arr, dtype, shape=None):
    assert device_of(arr) == backend.device
    assert arr.dtype == backend.dtype(dtype)
    if shape is not None:
        assert tuple(arr.shape) == tuple(shape)


def need_float64(backend):
    if not backend.has_float64:
        pytest.skip(f"{backend.label} has no float64; its float32 results are compared "
                    "with the float64 reference instead")


# --- layers ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", LAYERS, ids=ids(LAYERS))
def test_layer_shape_device_dtype_values(case, backend, float_dtype):
    layer, x, y, dx, grads, _ = run_layer(case, backend, float_dtype)
    n_out = layer.n_out or x.shape[1]
    assert_on(backend, y, float_dtype, (BATCH, *(case.out or (n_out,))))
    assert_on(backend, dx, float_dtype, x.shape)
    for la in leaves(layer):
        for k, p in la.params.items():
            assert_on(backend, p, float_dtype)
            assert_on(backend, la.grads[k], float_dtype, p.shape)
        for buf in la.state.values():
            assert_on(backend, buf, float_dtype)

    _, _, y_ref, dx_ref, grads_ref, _ = run_layer(case, backends.get("numpy"), "float64")
    tol = REF_RTOL[float_dtype]
    assert rel_error(backend.to_numpy(y), y_ref, REF_FLOOR) < tol
    assert rel_error(backend.to_numpy(dx), dx_ref, REF_FLOOR) < tol
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert rel_error(backend.to_numpy(grads[k]), grads_ref[k], REF_FLOOR) < tol, k


@pytest.mark.parametrize("case", LAYERS, ids=ids(LAYERS))
def test_layer_gradients_float64(case, backend):
    """Every parameter gradient and the input gradient, against central differences
    taken on the device itself in float64."""
    need_float64(backend)
    layer, x, _, dx, grads, g = run_layer(case, backend, "float64")
    x_host = backend.to_numpy(x)

    def objective(x_dev):  # L = sum(forward(x) * g), reduced on the host in float64
        return float(np.sum(backend.to_numpy(layer.forward(x_dev, train=case.train)[0]) * g))

    numeric = {}
    for la in leaves(layer):
        for k in list(la.params):
            original = la.params[k]

            def with_param(p, la=la, k=k):
                la.params[k] = backend.asarray(p, "float64")
                return objective(backend.asarray(x_host, "float64"))

            numeric[f"{la.name}.{k}"] = central_differences(with_param,
                                                            backend.to_numpy(original))
            la.params[k] = original
    numeric["input"] = central_differences(
        lambda xh: objective(backend.asarray(xh, "float64")), x_host)

    analytic = {k: backend.to_numpy(v) for k, v in grads.items()} | {
        "input": backend.to_numpy(dx)}
    errors = {k: rel_error(analytic[k], numeric[k]) for k in numeric}
    assert max(errors.values()) < GRAD_RTOL, errors


LOSS_NAMES = ["cross_entropy", "bce", "mse"]


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
@pytest.mark.parametrize("case", MODELS, ids=ids(MODELS))
def test_model_gradcheck(case, loss_name, backend):
    """nnx.gradcheck on whole models built on each backend: every parameter reported."""
    model, width = build(case, backend, "float32")
    rng = np.random.default_rng(3)
    x = backend.asarray(host_input(width, 4, 6), "float32")
    if loss_name == "cross_entropy":
        y = backend.asarray(rng.integers(0, 2, 6), "int64")
    else:
        y = backend.asarray(rng.integers(0, 2, (6, 2)) if loss_name == "bce"
                            else rng.standard_normal((6, 2)), "float32")
    report = nnx.gradcheck(model, loss_name, x, y)
    expected = {f"{la.name}.{k}" for la in leaves(model) for k in la.params}
    assert set(report.errors) == expected
    assert report.ok and max(report.errors.values()) < GRAD_RTOL, str(report)


# --- activations ----------------------------------------------------------------------

@pytest.mark.parametrize("spec", ACTIVATION_SPECS)
def test_activation_derivative(spec):
    assert check_derivative(get_activation(spec)) < 1e-6


@pytest.mark.parametrize("spec", ACTIVATION_SPECS)
def test_activation_finite_in_range(spec, backend, float_dtype):
    act = get_activation(spec)
    host = np.concatenate([[-1000.0, -80.0, 80.0, 1000.0], np.linspace(-10, 10, 201)])
    z = backend.asarray(host, float_dtype)
    a = act.forward(z)
    d = act.derivative(z=z, a=a)
    assert_on(backend, a, float_dtype, z.shape)
    assert_on(backend, d, float_dtype, z.shape)
    ah, dh = backend.to_numpy(a), backend.to_numpy(d)
    assert np.all(np.isfinite(ah)) and np.all(np.isfinite(dh))
    low, high = act.output_range
    assert np.all(ah >= low - 1e-6) and np.all(ah <= high + 1e-6)
    if act.vjp is not None:
        vjp = backend.to_numpy(act.vjp(backend.xp.ones_like(z), z=z, a=a))
        np.testing.assert_allclose(vjp, dh, rtol=1e-6)


# --- losses ---------------------------------------------------------------------------

def loss_inputs(case, seed=0):
    """Host logits and target for a loss case."""
    rng = np.random.default_rng(seed)
    n, k = case.shape
    z = rng.standard_normal((n, k)) * 2
    if case.target == "labels":
        t = rng.integers(0, max(k, 2), n)
    elif case.target == "onehot":
        t = np.eye(k)[rng.integers(0, k, n)]
    elif case.target == "soft":
        t = rng.dirichlet(np.ones(k), n)
    elif case.target == "binary":
        t = rng.integers(0, 2, (n, k)).astype(np.float64)
    elif case.target == "real":
        t = rng.standard_normal((n, k))
    else:  # real-vector
        t = rng.standard_normal(n)
    return z, t


def to_device(backend, t, dtype):
    return backend.asarray(t, "int64" if t.dtype.kind in "iu" else dtype)


def reference_loss(case, z, t):
    """NumPy float64 value and gradient, from the textbook formulas."""
    n, k = z.shape
    if case.loss == "cross_entropy":
        y = np.eye(k)[t] if t.ndim == 1 else t
        logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        return -np.sum(y * logp) / n, (np.exp(logp) - y) / n
    y = t.reshape(n, k)
    if case.loss == "bce":  # -y log s(z) - (1 - y) log(1 - s(z)) = log(1 + e^z) - y z
        return np.mean(np.logaddexp(0.0, z) - y * z), (1 / (1 + np.exp(-z)) - y) / y.size
    return np.mean((z - y) ** 2), 2 * (z - y) / y.size


@pytest.mark.parametrize("case", LOSSES, ids=ids(LOSSES))
def test_loss_shape_device_dtype_values(case, backend, float_dtype):
    loss = get_loss(case.loss)
    z_host, t_host = loss_inputs(case)
    z = backend.asarray(z_host, float_dtype)
    value, d_out = loss(z, to_device(backend, t_host, float_dtype))
    assert_on(backend, value, float_dtype, ())
    assert_on(backend, d_out, float_dtype, z.shape)
    ref_value, ref_grad = reference_loss(case, z_host, t_host)
    tol = REF_RTOL[float_dtype]
    assert float(backend.to_numpy(value)) == pytest.approx(ref_value, rel=tol)
    assert rel_error(backend.to_numpy(d_out), ref_grad, REF_FLOOR) < tol
    # a mean over the batch: the same batch twice gives the same value
    twice, _ = loss(backend.asarray(np.concatenate([z_host, z_host]), float_dtype),
                    to_device(backend, np.concatenate([t_host, t_host]), float_dtype))
    assert float(backend.to_numpy(twice)) == pytest.approx(ref_value, rel=tol)


@pytest.mark.parametrize("case", LOSSES, ids=ids(LOSSES))
def test_loss_gradient_float64(case, backend):
    need_float64(backend)
    loss = get_loss(case.loss)
    z_host, t_host = loss_inputs(case, seed=1)
    t = to_device(backend, t_host, "float64")
    _, d_out = loss(backend.asarray(z_host, "float64"), t)
    numeric = central_differences(
        lambda zh: float(backend.to_numpy(loss(backend.asarray(zh, "float64"), t)[0])), z_host)
    assert rel_error(backend.to_numpy(d_out), numeric) < GRAD_RTOL


@pytest.mark.parametrize("case", LOSSES, ids=ids(LOSSES))
def test_loss_finite_at_huge_logits(case, backend, float_dtype):
    loss = get_loss(case.loss)
    z_host, t_host = loss_inputs(case)
    value, d_out = loss(backend.asarray(np.sign(z_host) * 1000.0, float_dtype),
                        to_device(backend, t_host, float_dtype))
    assert np.isfinite(backend.to_numpy(value))
    assert np.all(np.isfinite(backend.to_numpy(d_out)))


LOGITS = np.array([[1000.0, -1000.0, -1000.0], [-1000.0, 1000.0, -1000.0]])


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "onehot"])
def test_cross_entropy_on_confident_logits(backend, float_dtype, onehot):
    loss = get_loss("cross_entropy")
    z = backend.asarray(LOGITS, float_dtype)

    def target(labels):
        t = np.eye(3)[labels] if onehot else np.array(labels)
        return to_device(backend, t, float_dtype)

    right, d_right = loss(z, target([0, 1]))
    assert abs(float(backend.to_numpy(right))) < 1e-6
    assert np.max(np.abs(backend.to_numpy(d_right))) < 1e-6
    wrong, d_wrong = loss(z, target([1, 2]))  # each logit of the label is 2000 below the top
    assert float(backend.to_numpy(wrong)) == pytest.approx(2000.0, rel=1e-6)
    expected = (np.eye(3)[[0, 1]] - np.eye(3)[[1, 2]]) / 2
    np.testing.assert_allclose(backend.to_numpy(d_wrong), expected, atol=1e-6)


def test_binary_cross_entropy_on_confident_logits(backend, float_dtype):
    loss = get_loss("bce")
    z = backend.asarray([[1000.0], [-1000.0]], float_dtype)
    right, d_right = loss(z, backend.asarray([1, 0], "int64"))
    assert abs(float(backend.to_numpy(right))) < 1e-6
    assert np.max(np.abs(backend.to_numpy(d_right))) < 1e-6
    wrong, d_wrong = loss(z, backend.asarray([0, 1], "int64"))
    assert float(backend.to_numpy(wrong)) == pytest.approx(1000.0, rel=1e-6)
    np.testing.assert_allclose(backend.to_numpy(d_wrong), [[0.5], [-0.5]], atol=1e-6)


# --- dropout and batch normalisation --------------------------------------------------

def test_dropout_train_and_eval(backend, float_dtype):
    p = 0.3
    layer = Dropout(p)
    layer.init(backend, np.random.default_rng(0), float_dtype)
    x_host = np.random.default_rng(1).uniform(1.0, 2.0, (400, 50))
    x = backend.asarray(x_host, float_dtype)
    y, backward = layer.forward(x, train=True)
    assert_on(backend, y, float_dtype, x.shape)
    yh = backend.to_numpy(y)
    dropped = yh == 0
    assert abs(dropped.mean() - p) < 0.02  # 20,000 units: sd of the fraction is 0.003
    np.testing.assert_allclose(yh[~dropped], x_host[~dropped] / (1 - p), rtol=1e-6)
    dx = backend.to_numpy(backward(backend.xp.ones_like(y)))
    np.testing.assert_array_equal(dx == 0, dropped)  # the same mask on the way back
    np.testing.assert_allclose(dx[~dropped], 1 / (1 - p), rtol=1e-6)
    again = backend.to_numpy(layer.forward(x, train=True)[0]) == 0
    assert not np.array_equal(again, dropped)  # a new mask every step

    y_eval, backward_eval = layer.forward(x, train=False)
    np.testing.assert_array_equal(backend.to_numpy(y_eval), backend.to_numpy(x))
    dy = backend.asarray(x_host * 3, float_dtype)
    np.testing.assert_array_equal(backend.to_numpy(backward_eval(dy)), backend.to_numpy(dy))


def test_batchnorm_statistics_formula(backend, float_dtype):
    """One batch over and over: running mean and (unbiased) variance become the batch's."""
    rng = np.random.default_rng(0)
    data = np.array([2.0, -1.0, 0.5]) + np.array([3.0, 0.5, 1.0]) * rng.standard_normal((64, 3))
    bn = BatchNorm(3, momentum=0.2)
    bn.init(backend, rng, float_dtype)
    x = backend.asarray(data, float_dtype)
    for _ in range(60):  # 0.8**60 ~ 1.5e-6 of the starting gap is left
        y, _ = bn.forward(x, train=True)
    tol = 1e-4 if float_dtype == "float32" else 1e-5
    np.testing.assert_allclose(backend.to_numpy(bn.state["running_mean"]), data.mean(0),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(bn.state["running_var"]), data.var(0, ddof=1),
                               rtol=tol)
    yh = backend.to_numpy(y)  # training mode normalises with the batch's own statistics
    np.testing.assert_allclose(yh.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(yh.var(0), 1.0, rtol=1e-3)


def test_batchnorm_running_statistics_converge_and_eval_uses_them(backend, float_dtype):
    rng = np.random.default_rng(0)
    mean, std = np.array([2.0, -1.0, 0.5]), np.array([3.0, 0.5, 1.0])
    data = mean + std * rng.standard_normal((4096, 3))
    bn = BatchNorm(3)
    bn.init(backend, rng, float_dtype)
    for _ in range(150):  # shuffled minibatches of 64
        bn.forward(backend.asarray(data[rng.integers(0, len(data), 64)], float_dtype),
                   train=True)
    running_mean = backend.to_numpy(bn.state["running_mean"])
    running_var = backend.to_numpy(bn.state["running_var"])
    assert_on(backend, bn.state["running_mean"], float_dtype, (3,))
    # EMA noise with momentum 0.1 and batches of 64 is about 0.03 standard deviations
    assert np.all(np.abs(running_mean - data.mean(0)) < 0.15 * std)
    assert np.all(np.abs(running_var / data.var(0) - 1) < 0.25)

    x_host = np.array([[0.0, 0.0, 0.0], [5.0, -2.0, 1.0]])
    y, _ = bn.forward(backend.asarray(x_host, float_dtype), train=False)
    expected = (x_host - running_mean) / np.sqrt(running_var + bn.eps)  # gamma 1, beta 0
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(bn.state["running_mean"]), running_mean)
    one_row, _ = bn.forward(backend.asarray(x_host[:1], float_dtype), train=False)
    np.testing.assert_allclose(backend.to_numpy(one_row), expected[:1], rtol=1e-5, atol=1e-6)
