"""Wrong derivatives are caught: custom activations, custom layers, whole models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace

import nnx
from nnx.activations import ACTIVATIONS, sigmoid


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


@pytest.fixture
def registry():
    """Names defined by a test are removed from the activation registry afterwards."""
    names = []
    yield names
    for name in names:
        ACTIVATIONS.pop(name, None)


# --- custom activations ---------------------------------------------------------

def test_wrong_sigmoid_derivative_is_caught(registry):
    registry.append("my_sigmoid")
    with pytest.raises(nnx.DerivativeMismatch) as info:
        nnx.define_activation("my_sigmoid", sigmoid,
                              lambda *, z, a: sigmoid(z) * sigmoid(1.0 - z), family="sigmoid")
    exc = info.value
    assert exc.name == "my_sigmoid"
    z = exc.worst_input
    assert isinstance(z, float)
    assert exc.expected == pytest.approx(_sig(z) * (1 - _sig(z)), rel=1e-4)
    assert exc.received == pytest.approx(_sig(z) * _sig(1 - z), rel=1e-6)
    assert abs(exc.expected - exc.received) > 1e-3
    msg = str(exc)
    assert "my_sigmoid" in msg
    assert f"{z:.6g}" in msg and f"{exc.expected:.6g}" in msg and f"{exc.received:.6g}" in msg
    assert "my_sigmoid" not in ACTIVATIONS  # not registered


def test_relu_derivative_fed_the_output_is_caught(registry):
    # relu(z) instead of the step: right for z < 0 and at z = 1, wrong elsewhere
    registry.append("my_relu")
    relu = ACTIVATIONS["relu"].forward
    with pytest.raises(nnx.DerivativeMismatch) as info:
        nnx.define_activation("my_relu", relu, lambda *, z, a: a, family="relu")
    exc = info.value
    assert exc.name == "my_relu"
    assert exc.worst_input > 0 and exc.worst_input != 1.0
    assert exc.expected == pytest.approx(1.0, rel=1e-6)
    assert exc.received == pytest.approx(exc.worst_input)
    assert "my_relu" not in ACTIVATIONS


def test_wrong_vjp_is_caught_even_with_a_right_derivative(registry):
    registry.append("my_tanh")
    tanh = ACTIVATIONS["tanh"]
    with pytest.raises(nnx.DerivativeMismatch, match="vjp"):
        nnx.define_activation("my_tanh", tanh.forward, tanh.derivative,
                              vjp=lambda dy, *, z, a: dy * (1.0 - a))


def softsign(z):
    return z / (1.0 + array_namespace(z).abs(z))


def softsign_derivative(*, z, a):
    d = 1.0 + array_namespace(z).abs(z)
    return 1.0 / (d * d)


def test_correct_custom_activation_registers_and_trains(registry):
    registry.append("my_softsign")
    act = nnx.define_activation("my_softsign", softsign, softsign_derivative, family="tanh",
                                output_range=(-1.0, 1.0))
    assert ACTIVATIONS["my_softsign"] is act
    assert nnx.get_activation("my_softsign") is act
    ds = nnx.data.blobs(n=300, classes=3, seed=0)
    model = nnx.mlp([2, 16, 3], activation="my_softsign")
    assert model.layers[1].activation is act
    trainer = nnx.Trainer(model, "cross_entropy", nnx.SGD(0.3), device="numpy", seed=0)
    history = trainer.fit(ds.x_train, ds.y_train, epochs=30, batch_size=64)
    losses = history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.evaluate(ds.x_test, ds.y_test)["accuracy"] > 0.8
    # and it passes a whole-model gradient check
    m64 = nnx.mlp([2, 5, 3], activation="my_softsign").init("numpy", 0, "float64")
    assert nnx.gradcheck(m64, "cross_entropy", ds.x_train[:8], ds.y_train[:8]).ok


# --- custom layers ----------------------------------------------------------------

class Scale(nnx.Layer):
    """``y = x * s`` per feature, with a trainable ``s``; ``mistake`` breaks the backward."""

    builtin = False

    def __init__(self, n, mistake=None):
        super().__init__()
        self.n_in = self.n_out = n
        self.mistake = mistake

    def init(self, backend, rng, dtype="float32"):
        super().init(backend, rng, dtype)
        self.params["s"] = backend.asarray(rng.uniform(0.5, 1.5, self.n_in), dtype)
        self.zero_grads()

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        s = self.params["s"]

        def backward(dy):
            ds = xp.sum(dy * x, axis=0)
            self.grads["s"] += ds * 2.0 if self.mistake == "param" else ds
            return dy if self.mistake == "input" else dy * s

        return x * s, backward


@pytest.mark.parametrize("mistake", ["param", "input"])
def test_custom_layer_with_wrong_backward_fails_at_init(mistake):
    model = nnx.Sequential([nnx.Dense(3, 4), Scale(4, mistake=mistake)])
    with pytest.raises(nnx.DerivativeMismatch) as info:
        model.init("numpy", 0)
    assert info.value.name == "scale_1"
    assert "Scale" in str(info.value)
    assert ("for s " if mistake == "param" else "for input") in str(info.value)


def test_custom_layer_with_right_backward_passes(backend):
    model = nnx.Sequential([nnx.Dense(3, 4), Scale(4), nnx.Dense(4, 2)]).init(backend, 0)
    assert model.layers[1]._checked
    # the check left the layer's own arrays on the backend
    x = backend.asarray(np.ones((5, 3)), "float32")
    y, _ = model.forward(x, train=True)
    assert tuple(y.shape) == (5, 2)
    assert type(model.layers[1].params["s"]) is type(x)


# --- whole-model gradcheck ---------------------------------------------------------

def _batch(n_in=4, n=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.integers(0, classes, n)


def test_gradcheck_reports_every_parameter(backend):
    model = nnx.mlp([4, 8, 6, 3], activation="tanh").init(backend, 0, "float32")
    before = model.get_weights()
    x, y = _batch()
    report = nnx.gradcheck(model, "cross_entropy", backend.asarray(x, "float32"),
                           backend.asarray(y, "int64"))
    assert set(report.errors) == {f"dense_{i}.{k}" for i in (0, 2, 4) for k in "wb"}
    assert all(e < 1e-6 for e in report.errors.values()), str(report)
    assert report.ok
    after = model.get_weights()  # the model's own parameters came back untouched
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert model.layers[0].params["w"].dtype == backend.dtype("float32")


def _break_dense(monkeypatch, mistake):
    original = nnx.Dense.forward

    def forward(self, x, *, train=False):
        y, backward = original(self, x, train=train)
        xp = array_namespace(x)

        def broken(dy, need_dx=True):
            dx = backward(dy, need_dx)
            if mistake == "bias":  # forgot the bias gradient
                self.grads["b"] -= xp.sum(dy, axis=0)
            return None if dx is None else (dx * 2.0 if mistake == "input" else dx)

        return y, broken

    monkeypatch.setattr(nnx.Dense, "forward", forward)


def test_gradcheck_catches_a_dropped_bias_gradient(monkeypatch):
    model = nnx.mlp([4, 8, 3], activation="tanh").init("numpy", 0, "float64")
    _break_dense(monkeypatch, "bias")
    x, y = _batch()
    report = nnx.gradcheck(model, "cross_entropy", x, y)
    assert not report.ok
    failed = {k for k, e in report.errors.items() if e > 1e-6}
    assert failed == {"dense_0.b", "dense_2.b"}
    assert report.worst[0] in failed
    with pytest.raises(nnx.DerivativeMismatch, match="dense_"):
        nnx.gradcheck(model, "cross_entropy", x, y, raise_on_error=True)


def test_gradcheck_catches_a_wrong_input_gradient(monkeypatch):
    model = nnx.mlp([4, 8, 3], activation="tanh").init("numpy", 0, "float64")
    _break_dense(monkeypatch, "input")
    x, y = _batch()
    report = nnx.gradcheck(model, "cross_entropy", x, y)
    # the output layer's own gradients are right; the wrong dx reaches the first layer's
    assert report.errors["dense_2.w"] < 1e-6 and report.errors["dense_2.b"] < 1e-6
    assert report.errors["dense_0.w"] > 1e-3 and report.errors["dense_0.b"] > 1e-3
    assert not report.ok
