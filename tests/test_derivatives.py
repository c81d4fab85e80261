"""Wrong derivatives are caught by name: custom activations, custom layers, whole models.

The mistakes are the ones people make: ``sigmoid(z) * sigmoid(1 - z)``, a
derivative fed the output where it needed the pre-activation (wrong only for
some inputs), a vjp that disagrees with its derivative, a layer whose backward
forgets a factor, and a trusted layer that is broken.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace

import nnx
from nnx import backends
from nnx.activations import ACTIVATIONS, Activation, define_activation, get_activation, sigmoid
from nnx.errors import ConfigError, DerivativeMismatch


@pytest.fixture
def registry():
    """Put the activation registry back as it was after each test."""
    saved = dict(ACTIVATIONS)
    yield ACTIVATIONS
    ACTIVATIONS.clear()
    ACTIVATIONS.update(saved)


def host_sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


# --- activations ----------------------------------------------------------------------

def test_sigmoid_of_one_minus_z_is_caught(registry):
    with pytest.raises(DerivativeMismatch) as info:
        define_activation("my_sigmoid", sigmoid,
                          lambda *, z, a: sigmoid(z) * sigmoid(1.0 - z), family="sigmoid")
    err = info.value
    z = err.worst_input
    assert err.name == "my_sigmoid" and isinstance(z, float)
    # expected is the true derivative at the worst input, received what the user wrote
    assert err.expected == pytest.approx(host_sigmoid(z) * (1 - host_sigmoid(z)), abs=1e-7)
    assert err.received == pytest.approx(host_sigmoid(z) * host_sigmoid(1 - z), rel=1e-9)
    assert abs(err.expected - err.received) > 1e-3
    msg = str(err)
    assert "'my_sigmoid'" in msg and f"{z:.6g}" in msg
    assert f"{err.expected:.6g}" in msg and f"{err.received:.6g}" in msg
    assert "pre-activation" in msg  # says what to look at
    assert "my_sigmoid" not in registry


@pytest.mark.parametrize("name, forward, derivative, wrong_where", [
    # relu's derivative written as relu(z) (it got the output a, not the step): right
    # for every z <= 0 and at z = 1, wrong for every other positive z
    ("relu_from_output", "relu", lambda *, z, a: a, lambda z: z > 0),
    # elu's derivative for z <= 0 is a + alpha; z + alpha is right for z > 0 only
    ("elu_from_input", "elu",
     lambda *, z, a: array_namespace(z).where(z > 0, 1.0, z + 1.0), lambda z: z < 0),
    # leaky relu whose negative side got the output: right for z > 0 only
    ("leaky_from_output", "leaky_relu:0.1",
     lambda *, z, a: array_namespace(z).where(z > 0, 1.0, a), lambda z: z < 0),
])
def test_derivative_wrong_for_some_inputs_is_caught(registry, name, forward, derivative,
                                                    wrong_where):
    act = get_activation(forward)
    z = np.array([-2.0, 0.5, 3.0])
    a = act.forward(z)
    agree = np.isclose(act.derivative(z=z, a=a), derivative(z=z, a=a))
    assert agree.any() and not agree.all()  # the mistake only shows for some inputs

    with pytest.raises(DerivativeMismatch) as info:
        define_activation(name, act.forward, derivative, family="relu")
    assert info.value.name == name
    assert wrong_where(info.value.worst_input)
    assert name not in registry


def test_wrong_vjp_is_caught_even_with_a_right_derivative(registry):
    tanh = get_activation("tanh")
    with pytest.raises(DerivativeMismatch, match="the vjp of activation 'my_tanh'"):
        define_activation("my_tanh", tanh.forward, tanh.derivative, family="tanh",
                          vjp=lambda dy, *, z, a: dy * (1.0 - z * z))


def test_forward_and_derivative_of_different_functions_are_caught(registry):
    with pytest.raises(DerivativeMismatch):
        define_activation("mismatched", get_activation("tanh").forward,
                          get_activation("sigmoid").derivative)


def test_derivative_that_is_not_elementwise_is_caught(registry):
    with pytest.raises(DerivativeMismatch, match="elementwise"):
        define_activation("summed", lambda z: z * z,
                          lambda *, z, a: array_namespace(z).sum(2.0 * z))


def softsign(z):
    return z / (1.0 + array_namespace(z).abs(z))


def softsign_backward(*, z, a):
    d = 1.0 + array_namespace(z).abs(z)
    return 1.0 / (d * d)


def hard_tanh(z):
    xp = array_namespace(z)
    return xp.minimum(xp.maximum(z, -1.0), 1.0)


def hard_tanh_backward(*, z, a):
    xp = array_namespace(z)
    return xp.astype(xp.abs(z) < 1.0, z.dtype)


def test_correct_custom_activations_register_and_train(registry, backend):
    act = define_activation("softsign", softsign, softsign_backward, family="tanh",
                            output_range=(-1.0, 1.0))
    kinked = define_activation("hard_tanh", hard_tanh, hard_tanh_backward, family="tanh")
    assert registry["softsign"] is act and get_activation("hard_tanh") is kinked

    model = nnx.mlp([3, 6, 5, 2], activation=["softsign", "hard_tanh"]).init(backend, 0)
    assert [type(la).__name__ for la in model] == ["Dense", "ActivationLayer", "Dense",
                                                   "ActivationLayer", "Dense"]
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((8, 3)) * 0.5, "float32")
    y = backend.asarray(rng.integers(0, 2, 8), "int64")
    report = nnx.gradcheck(model, "cross_entropy", x, y)
    assert report.ok, str(report)

    loss, opt = nnx.get_loss("cross_entropy"), nnx.SGD(0.5)
    losses = []
    for _ in range(30):
        out, backward = model.forward(x, train=True)
        value, d_out = loss(out, y)
        backward(d_out, need_dx=False)
        opt.step(model)
        losses.append(float(backend.to_numpy(value)))
    assert losses[-1] < 0.5 * losses[0]
    # the configuration names it, so a saved model rebuilds with the same activation
    assert nnx.layers.build(model.config()).layers[1].activation is act


def test_unchecked_definition_is_possible_but_explicit(registry):
    act = define_activation("not_checked", sigmoid, lambda *, z, a: z, check=False,
                            register=False)
    assert isinstance(act, Activation) and "not_checked" not in registry
    with pytest.raises(ConfigError, match="unknown activation 'not_checked'"):
        get_activation("not_checked")


# --- custom layers --------------------------------------------------------------------

class Scale(nnx.Layer):
    """``y = x * s`` per feature, with a selectable mistake in its backward."""

    builtin = False

    def __init__(self, n: int, mistake: str | None = None) -> None:
        super().__init__()
        self.n_in = self.n_out = n
        self.mistake = mistake

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        self.params["s"] = backend.asarray(rng.uniform(0.5, 1.5, self.n_in), dtype)
        self.zero_grads()

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        s = self.params["s"]

        def backward(dy):
            # dL/ds = sum_batch dy * x;  dL/dx = dy * s
            if self.mistake == "param":
                self.grads["s"] += xp.sum(dy, axis=0)
            else:
                self.grads["s"] += xp.sum(dy * x, axis=0)
            return dy if self.mistake == "input" else dy * s

        return x * s, backward

    def config(self) -> dict:
        return {"n": self.n_in}


@pytest.mark.parametrize("mistake, what", [("param", "for s"), ("input", "for input")])
@pytest.mark.parametrize("device", ["numpy", "strict:device1"])
def test_custom_layer_with_a_wrong_backward_fails_at_init(device, mistake, what):
    if device.startswith("strict"):
        pytest.importorskip("array_api_strict")
    backend = backends.get(device)
    model = nnx.Sequential([nnx.Dense(3, 4), Scale(4, mistake), nnx.Dense(4, 2)])
    with pytest.raises(DerivativeMismatch) as info:
        model.init(backend, 0)
    msg = str(info.value)
    assert "custom layer Scale ('scale_1')" in msg and what in msg
    assert info.value.name == "scale_1"
    assert info.value.expected != pytest.approx(info.value.received)


def test_custom_layer_with_a_right_backward_passes(backend):
    layer = Scale(4)
    model = nnx.Sequential([nnx.Dense(3, 4), layer, nnx.ActivationLayer("tanh"),
                            nnx.Dense(4, 2)]).init(backend, 0)
    assert layer._checked and layer.backend is backend
    assert layer.params["s"].dtype == backend.dtype("float32")  # put back after the check
    x = backend.asarray(np.random.default_rng(1).standard_normal((5, 3)), "float32")
    report = nnx.gradcheck(model, "mse", x, backend.asarray(np.ones((5, 2)), "float32"))
    assert report.ok and "scale_1.s" in report.errors, str(report)


# --- whole models ---------------------------------------------------------------------

def test_gradcheck_reports_every_parameter(backend):
    model = nnx.mlp([3, 5, 4, 2], activation=["tanh", "relu"]).init(backend, 0)
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((6, 3)), "float32")
    y = backend.asarray(rng.integers(0, 2, 6), "int64")
    report = nnx.gradcheck(model, "cross_entropy", x, y)
    names = ["dense_0.w", "dense_0.b", "dense_2.w", "dense_2.b", "dense_4.w", "dense_4.b"]
    assert list(report.errors) == names
    assert report.ok and all(e < 1e-6 for e in report.errors.values())
    text = str(report)
    assert all(f"{n} " in text for n in names) and "MISMATCH" not in text
    # the model is left as it was: float32 on its own device, gradients zero
    for _, params, grads in model.parameters():
        for k in params:
            assert params[k].dtype == backend.dtype("float32")
            assert not np.any(backend.to_numpy(grads[k]))


def wrong_tanh() -> Activation:
    """A tanh whose derivative uses z where it needed a (built without the check)."""
    tanh = get_activation("tanh")
    return Activation("tanh", tanh.forward, lambda *, z, a: 1.0 - z * z, "tanh")


def test_gradcheck_catches_a_broken_layer(backend):
    model = nnx.Sequential([nnx.Dense(3, 5), nnx.ActivationLayer(wrong_tanh()),
                            nnx.Dense(5, 2)]).init(backend, 0)  # trusted, so init passes
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((6, 3)), "float32")
    y = backend.asarray(rng.integers(0, 2, 6), "int64")
    report = nnx.gradcheck(model, "cross_entropy", x, y)
    assert not report.ok
    # the layer after the broken one is fine; everything before it is wrong
    assert report.errors["dense_2.w"] < 1e-6 and report.errors["dense_2.b"] < 1e-6
    assert report.errors["dense_0.w"] > 1e-3 and report.errors["dense_0.b"] > 1e-3
    assert report.worst[0].startswith("dense_0.")
    assert "dense_0.w" in str(report) and "MISMATCH" in str(report)
    with pytest.raises(DerivativeMismatch, match="check the backward of layer 'dense_0'"):
        nnx.gradcheck(model, "cross_entropy", x, y, raise_on_error=True)


def test_gradcheck_catches_a_wrong_parameter_gradient(monkeypatch):
    backend = backends.get("numpy")
    model = nnx.mlp([3, 4, 2]).init(backend, 0, "float64")
    dense = model.layers[-1]
    real_forward = dense.forward

    def forward(x, *, train=False):  # the bias gradient summed twice
        y, backward = real_forward(x, train=train)

        def twice(dy, need_dx=True):
            dx = backward(dy, need_dx)
            dense.grads["b"] += backend.xp.sum(dy, axis=0)
            return dx

        return y, twice

    monkeypatch.setattr(dense, "forward", forward)
    x = np.random.default_rng(0).standard_normal((5, 3))
    report = nnx.gradcheck(model, "mse", x, np.zeros((5, 2)))
    assert report.worst[0] == "dense_2.b" and report.errors["dense_2.b"] == pytest.approx(
        0.5, rel=1e-3)
    assert [k for k, e in report.errors.items() if e > 1e-6] == ["dense_2.b"]


class ChannelScale(nnx.Layer):
    """``y[b, r, s, c] = x[b, r, s, c] * g[c]`` on images, with a selectable mistake."""

    builtin = False

    def __init__(self, mistake: bool = False) -> None:
        super().__init__()
        self.channels, self.mistake = None, mistake

    def output_shape(self, shape):
        self.channels = shape[-1]  # images (h, w, c) keep their shape
        return shape

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        self.params["g"] = backend.asarray(rng.uniform(0.5, 1.5, self.channels), dtype)
        self.zero_grads()

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        g = self.params["g"]

        def backward(dy):
            # dL/dg sums over every position of every example; dL/dx = dy * g
            self.grads["g"] += xp.sum(dy * x, axis=(0, 1, 2))
            return dy if self.mistake else dy * g

        return x * g, backward


def _image_stack(layer):
    return nnx.Sequential([nnx.Conv2D(3, 3), layer, nnx.ActivationLayer("relu"),
                           nnx.Flatten(), nnx.Dense(6 * 5 * 3, 2)], input_shape=(6, 5, 2))


@pytest.mark.parametrize("device", ["numpy", "strict:device1"])
def test_a_custom_image_layer_is_checked_on_images_of_its_own_shape(device):
    if device.startswith("strict"):
        pytest.importorskip("array_api_strict")
    layer = ChannelScale()
    model = _image_stack(layer).init(device, 0)
    assert layer._checked and layer.params["g"].shape == (3,)
    x = np.random.default_rng(2).standard_normal((4, 6, 5, 2))
    assert nnx.check_layer(layer, input_shape=(6, 5, 3)) < 1e-6
    out, _ = model.forward(model.backend.asarray(x, "float32"))
    assert tuple(out.shape) == (4, 2)


def test_a_custom_image_layer_with_a_wrong_backward_fails_at_init():
    with pytest.raises(DerivativeMismatch, match=r"custom layer ChannelScale .* for input"):
        _image_stack(ChannelScale(mistake=True)).init("numpy", 0)


def test_the_doctor_checks_a_custom_image_layer_on_images():
    from nnx.doctor.model_checks import check_derivatives

    model = _image_stack(ChannelScale()).init("numpy", 0)
    model.layers[1].mistake = True  # wrong after the build-time check passed
    found = check_derivatives(model)
    assert [f.id for f in found] == ["derivative-mismatch"]
    assert found[0].layers == ["channelscale_1"] and "for input" in found[0].cause
