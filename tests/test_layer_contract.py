"""The layer contract a user writes to (``help(nnx.Layer)``), and the observation hook.

- The README's custom-layer example is read from README.md and run: it trains on
  numpy, strict and torch, passes the build-time gradient check and saves/loads.
- Gradients exist for every parameter once ``init`` returns, whatever order the
  layer calls ``super().init()`` in (first, last, never), also after a move to
  another backend.
- Layers declare the properties tools read (``stochastic``, ``batch_dependent``)
  and ``nnx.gradcheck`` picks its mode from them, not from layer types.
- ``Sequential`` observers see every layer's ``(x, y)`` and ``(dy, dx)``, cost no
  host read, and are not copied with the model.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace
from conftest import get_backend_or_skip

import nnx
from nnx.errors import ConfigError
from nnx.layers import LAYER_TYPES, Observer
from nnx.testing.counting import counting_backend

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "### Your own activation or layer"
CONTRACT_DEVICES = ["numpy", "strict", "strict:device1", "torch"]


def readme_layer_example() -> str:
    """The ``python`` block of the README section that defines an ``nnx.Layer``."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    layer_blocks = [b for b in blocks if "(nnx.Layer)" in b]
    assert len(layer_blocks) == 1, f"{SECTION!r} must hold one python block with an nnx.Layer"
    return layer_blocks[0]


@pytest.fixture
def layer_types():
    """LAYER_TYPES as it was: a test may register a layer class."""
    saved = dict(LAYER_TYPES)
    yield LAYER_TYPES
    LAYER_TYPES.clear()
    LAYER_TYPES.update(saved)


def _digits_like(n=256, n_in=64, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, n_in)) * 2.0
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.standard_normal((n, n_in))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("device", CONTRACT_DEVICES)
def test_readme_layer_example_trains_everywhere(device, layer_types, tmp_path):
    backend = get_backend_or_skip(device)
    space: dict = {}
    exec(compile(readme_layer_example(), "README.md", "exec"), space)  # noqa: S102
    model, scale_cls = space["model"], space["Scale"]
    assert LAYER_TYPES["Scale"] is scale_cls  # @nnx.register_layer
    scale = next(la for la in model.layers if isinstance(la, scale_cls))
    assert not scale.builtin
    x, y = _digits_like()
    trainer = nnx.Trainer(model, "cross_entropy", "adam", lr=1e-2, device=backend)
    assert scale._checked  # the build-time gradient check ran, and passed
    s0 = backend.to_numpy(scale.params["s"]).copy()
    history = trainer.fit(x, y, epochs=5, batch_size=32)
    loss = history.history["loss"]
    assert loss[-1] < 0.5 * loss[0], loss
    assert not np.allclose(backend.to_numpy(scale.params["s"]), s0)  # the scale learned
    assert trainer.evaluate(x, y)["accuracy"] > 0.9
    # float64 whole-model check on the trained model
    xs = backend.asarray(x[:8], "float32")
    report = nnx.gradcheck(model, "cross_entropy", xs, backend.asarray(y[:8], "int64"))
    assert report.ok and "scale_1.s" in report.errors, str(report)
    # saved and rebuilt by its registered name
    nnx.save(model, tmp_path / "scale.npz")
    loaded = nnx.load(tmp_path / "scale.npz", device=backend)
    assert type(loaded.layers[1]) is scale_cls
    np.testing.assert_allclose(backend.to_numpy(loaded(xs)), backend.to_numpy(model(xs)),
                               rtol=1e-5, atol=1e-6)


def test_readme_example_is_what_the_layer_docstring_teaches():
    # help(nnx.Layer) shows the same rules the README example follows
    doc = nnx.Layer.__doc__
    for phrase in ("(y, backward)", "need_dx", "array_namespace(x)", "backend.asarray",
                   "register_layer", "config()", "never plain ``=``", "stochastic",
                   "batch_dependent", "super().init(backend, rng, dtype)"):
        assert phrase in doc, phrase
    block = readme_layer_example()
    for phrase in ("array_namespace(x)", "backend.asarray", "+=", "super().init", "config"):
        assert phrase in block, phrase


# --- gradients exist whatever the order -----------------------------------------------

def _scale_layer(order: str):
    """A per-feature scale whose ``init`` calls ``super().init()`` ``order``."""

    class Scale(nnx.Layer):
        def __init__(self, n):
            super().__init__()
            self.n_in = self.n_out = n

        def init(self, backend, rng, dtype="float32"):
            if order == "first":
                super().init(backend, rng, dtype)
            self.params["s"] = backend.asarray(rng.uniform(0.5, 1.5, self.n_in), dtype)
            if order == "last":
                super().init(backend, rng, dtype)
            if order == "zero_grads":
                super().init(backend, rng, dtype)
                self.zero_grads()

        def forward(self, x, *, train=False):
            xp, s = array_namespace(x), self.params["s"]

            def backward(dy):
                self.grads["s"] += xp.sum(dy * x, axis=0)
                return dy * s

            return x * s, backward

    Scale.__name__ = Scale.__qualname__ = f"Scale_{order}"
    return Scale


ORDERS = ["first", "last", "never", "zero_grads"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("device", CONTRACT_DEVICES)
def test_gradients_exist_whatever_the_order(order, device):
    backend = get_backend_or_skip(device)
    layer = _scale_layer(order)(5)
    model = nnx.Sequential([nnx.Dense(4, 5), layer, nnx.ActivationLayer("tanh"),
                            nnx.Dense(5, 3)])
    x, y = _digits_like(64, 4, 3)
    history = nnx.Trainer(model, "cross_entropy", "sgd", lr=0.1, device=backend).fit(
        x, y, epochs=3, batch_size=16)
    assert np.isfinite(history.history["loss"]).all()
    assert layer._checked and layer.backend is backend and layer.dtype == "float32"
    g, p = layer.grads["s"], layer.params["s"]
    assert set(layer.grads) == {"s"} and g.shape == p.shape and g.dtype == p.dtype
    assert str(array_namespace(g).__name__) == str(array_namespace(p).__name__)
    assert getattr(g, "device", None) == getattr(p, "device", None)


@pytest.mark.parametrize("order", ORDERS)
def test_a_layer_alone_has_its_gradients_after_init(order):
    backend = nnx.backends.get("numpy")
    layer = _scale_layer(order)(3)
    layer.init(backend, np.random.default_rng(0))
    x = np.ones((2, 3), dtype=np.float32)
    y, backward = layer.forward(x, train=True)
    backward(np.ones_like(y))
    np.testing.assert_allclose(layer.grads["s"], [2.0, 2.0, 2.0])
    assert nnx.check_layer(layer) < 1e-6


def test_gradients_follow_the_parameters_to_another_backend():
    strict = get_backend_or_skip("strict:device1")
    model = nnx.Sequential([nnx.Dense(4, 5), _scale_layer("last")(5), nnx.Dense(5, 2)])
    model.init("numpy", 0)
    nnx.Trainer(model, "cross_entropy", device=strict)  # moves the parameters
    for layer in model.layers:
        for k, p in layer.params.items():
            assert layer.grads[k].device == p.device == strict.device, (layer.name, k)


def test_subclassing_a_builtin_layer_adds_gradients_for_new_parameters():
    class ScaledDense(nnx.Dense):
        def init(self, backend, rng, dtype="float32"):
            super().init(backend, rng, dtype)
            self.params["g"] = backend.xp.ones((self.n_out,), dtype=backend.dtype(dtype),
                                               device=backend.device)

        def forward(self, x, *, train=False):
            y, back = super().forward(x, train=train)
            xp, g = array_namespace(x), self.params["g"]

            def backward(dy, need_dx=True):
                self.grads["g"] += xp.sum(dy * y, axis=0)
                return back(dy * g, need_dx)

            return y * g, backward

    model = nnx.Sequential([ScaledDense(3, 4), nnx.ActivationLayer("tanh"), nnx.Dense(4, 2)])
    model.init("numpy", 0)
    assert set(model.layers[0].grads) == {"w", "b", "g"} and model.layers[0]._checked


def test_forgetting_super_init_is_a_config_error():
    class NoSuper(nnx.Layer):
        def __init__(self):  # no super().__init__()
            self.n_in = self.n_out = 2

        def forward(self, x, *, train=False):
            return x, lambda dy: dy

    with pytest.raises(ConfigError, match=r"NoSuper.*must call super\(\).__init__\(\)"):
        nnx.Sequential([NoSuper()])


# --- properties tools read --------------------------------------------------------

def test_builtin_layers_declare_their_properties():
    assert nnx.Dropout(0.3).stochastic and not nnx.Dropout(0.0).stochastic
    assert nnx.BatchNorm(3).batch_dependent and not nnx.BatchNorm(3).stochastic
    assert not any(la.stochastic or la.batch_dependent
                   for la in (nnx.Dense(2, 3), nnx.ActivationLayer("relu")))
    assert nnx.Dense(2, 3).skips_dx and not nnx.ActivationLayer("relu").skips_dx


class _Centre(nnx.Layer):
    """``y = x - mean_batch(x)`` in training, identity otherwise; records the modes seen."""

    batch_dependent = True

    def __init__(self, n):
        super().__init__()
        self.n_in = self.n_out = n
        self.modes = []

    def forward(self, x, *, train=False):
        self.modes.append(train)
        if not train:
            return x, lambda dy: dy
        xp = array_namespace(x)
        y = x - xp.mean(x, axis=0)
        return y, lambda dy: dy - xp.mean(dy, axis=0)


class _Noise(nnx.Layer):
    """Stochastic in training (adds noise), identity otherwise."""

    stochastic = True

    def forward(self, x, *, train=False):
        if not train:
            return x, lambda dy: dy
        return x + 0.1 * array_namespace(x).ones_like(x), lambda dy: dy


@pytest.mark.parametrize("with_noise", [False, True])
def test_gradcheck_mode_comes_from_the_declared_properties(with_noise):
    centre = _Centre(4)
    layers = [nnx.Dense(3, 4), centre] + ([_Noise()] if with_noise else []) + [nnx.Dense(4, 2)]
    model = nnx.Sequential(layers).init("numpy", 0, "float64")
    centre.modes.clear()
    rng = np.random.default_rng(0)
    report = nnx.gradcheck(model, "mse", rng.standard_normal((6, 3)), np.zeros((6, 2)))
    assert report.ok, str(report)
    # batch-dependent alone: checked in training mode; with a stochastic layer: not
    assert set(centre.modes) == {not with_noise}


# --- the observation hook ------------------------------------------------------------

class _Recorder(Observer):
    def __init__(self):
        self.forward, self.backward = [], []

    def on_forward(self, index, layer, x, y, *, train):
        self.forward.append((index, layer.name, tuple(x.shape), tuple(y.shape), train))

    def on_backward(self, index, layer, dy, dx):
        self.backward.append((index, layer.name, tuple(dy.shape),
                              None if dx is None else tuple(dx.shape)))


def _model(backend):
    return nnx.mlp([3, 5, 2], activation="tanh").init(backend, 0)


def test_observers_see_every_layer_both_ways(backend):
    model, rec = _model(backend), _Recorder()
    model.add_observer(rec)
    model.add_observer(rec)  # once only
    assert model.observers == (rec,)
    x = backend.asarray(np.ones((4, 3)), "float32")
    out, backward = model.forward(x, train=True)
    assert rec.forward == [(0, "dense_0", (4, 3), (4, 5), True),
                           (1, "activationlayer_1", (4, 5), (4, 5), True),
                           (2, "dense_2", (4, 5), (4, 2), True)]
    backward(backend.xp.ones_like(out), need_dx=False)
    assert rec.backward == [(2, "dense_2", (4, 2), (4, 5)),
                            (1, "activationlayer_1", (4, 5), (4, 5)),
                            (0, "dense_0", (4, 5), None)]  # the input gradient skipped
    model(x)
    assert rec.forward[-1][-1] is False
    model.remove_observer(rec)
    model.remove_observer(rec)  # harmless twice
    n = len(rec.forward)
    model.forward(x, train=True)[1](backend.xp.ones_like(out))
    assert len(rec.forward) == n and model.observers == ()


def test_an_observer_that_only_watches_forward_leaves_backward_alone():
    class Forward(Observer):
        def __init__(self):
            self.seen = 0

        def on_forward(self, index, layer, x, y, *, train):
            self.seen += 1

    model, fwd = _model("numpy"), Forward()
    model.add_observer(fwd)
    assert model._backward_observers == () and model._forward_observers == (fwd,)
    out, backward = model.forward(np.ones((2, 3), dtype=np.float32))
    backward(np.ones_like(out))
    assert fwd.seen == 3


def test_observed_results_are_unchanged_and_copies_are_not_observed():
    model, rec = _model("numpy"), _Recorder()
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    plain, back = model.forward(x, train=True)
    dx_plain = back(np.ones_like(plain))
    model.add_observer(rec)
    seen, back = model.forward(x, train=True)
    np.testing.assert_array_equal(seen, plain)
    np.testing.assert_array_equal(back(np.ones_like(seen)), dx_plain)
    clone = copy.deepcopy(model, {id(model.backend): model.backend})  # as the lr finder does
    assert clone.observers == () and model.observers == (rec,)
    assert all("forward" not in la.__dict__ for la in model.layers)  # layers untouched


@pytest.mark.parametrize("device", ["numpy", "strict", "torch"])
def test_observing_costs_no_host_read(device):
    counted = counting_backend(get_backend_or_skip(device))

    class Norms(Observer):  # device-side reductions, as the doctor's monitor does
        def __init__(self):
            self.sums = []

        def on_forward(self, index, layer, x, y, *, train):
            self.sums.append(array_namespace(y).sum(y * y))

        def on_backward(self, index, layer, dy, dx):
            self.sums.append(array_namespace(dy).sum(dy * dy))

    model = _model(counted)
    model.add_observer(obs := Norms())
    x = counted.asarray(np.ones((4, 3)), "float32")
    before = counted.counts.syncs
    for _ in range(3):
        out, backward = model.forward(x, train=True)
        backward(counted.xp.ones_like(out), need_dx=False)
    assert counted.counts.syncs == before and len(obs.sums) == 18
