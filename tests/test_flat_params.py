"""One flat buffer for all parameters and one for all gradients (nnx.layers.flat).

On NumPy and torch (and CuPy, torch CUDA when present) every layer's ``params[k]``
and ``grads[k]`` are views into the model's two flat buffers and the optimizers
update the whole buffer at once. The same backend with ``flat_params=False``
keeps one array per parameter and the per-parameter loop: both paths must give
bitwise the same training (the same elementwise operations), except global-norm
clipping, whose norm is one dot product instead of a sum of per-parameter ones.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from conftest import GPU_DEVICES, get_backend_or_skip

import nnx
from nnx.layers.flat import ALIGN
from nnx.testing.counting import counting_backend

FLAT_DEVICES = [pytest.param(d, marks=[pytest.mark.gpu] if d in GPU_DEVICES else [])
                for d in ("numpy", "torch", "cuda", "torch:cuda")]


@pytest.fixture(params=FLAT_DEVICES)
def pair(request):
    """(backend with flat buffers, the same backend with one array per parameter)."""
    flat = get_backend_or_skip(request.param)
    assert flat.flat_params, f"{flat.label} keeps no flat buffers"
    return flat, dataclasses.replace(flat, flat_params=False, label=f"{flat.label}-per-param")


def _data(n=96, n_in=5, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)) % classes
    return x, y


def test_parameters_and_gradients_are_views_of_two_flat_buffers(pair):
    backend, _ = pair
    model = nnx.mlp([5, 7, 3], batchnorm=True).init(backend, 0)
    buf = model.parameter_buffer
    assert buf is not None and buf.intact()
    assert buf.names == list(model.params)
    assert tuple(buf.params.shape) == tuple(buf.grads.shape) == (buf.size,)
    for start, stop, shape in buf.offsets.values():
        assert start % ALIGN == 0 and stop - start == int(np.prod(shape))
    before = model.get_weights()
    buf.params[...] = 0.5  # one write through the flat buffer reaches every layer
    buf.grads[...] = 2.0
    for layer in model.layers:
        for k in layer.params:
            assert np.all(backend.to_numpy(layer.params[k]) == 0.5), (layer.name, k)
            assert np.all(backend.to_numpy(layer.grads[k]) == 2.0), (layer.name, k)
    model.set_weights(before)  # reassigns the layers' arrays: the buffer takes them back
    assert model.parameter_buffer is buf and buf.intact()
    host = backend.to_numpy(buf.params)
    for name, (start, stop, shape) in buf.offsets.items():
        np.testing.assert_array_equal(host[start:stop].reshape(shape), before[name])
    model.zero_grads()
    assert not np.any(backend.to_numpy(buf.grads))


def test_strict_keeps_one_array_per_parameter():
    backend = get_backend_or_skip("strict")
    assert not backend.flat_params
    model = nnx.mlp([5, 7, 3]).init(backend, 0)
    assert model.parameter_buffer is None
    x, y = _data()
    nnx.Trainer(model, "cross_entropy", nnx.Adam(1e-2), device=backend).fit(
        x, y, epochs=1, batch_size=32)


OPTIMIZERS = {
    "sgd": lambda: nnx.SGD(0.1),
    "momentum+l2": lambda: nnx.SGD(0.05, momentum=0.9, l2=1e-3),
    "nesterov+wd": lambda: nnx.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "rmsprop": lambda: nnx.RMSProp(3e-3),
    "adam": lambda: nnx.Adam(3e-3),
    "adamw+l2": lambda: nnx.AdamW(3e-3, l2=1e-3),
}


def _train(backend, make_opt, model=None, epochs=3, **fit):
    x, y = _data()
    tr = nnx.Trainer(model or nnx.mlp([5, 16, 8, 3], dropout=0.1), "cross_entropy",
                     make_opt(), device=backend, seed=3)
    history = tr.fit(x, y, epochs=epochs, batch_size=16, **fit)
    return history["loss"], {**tr.model.get_weights(), **tr.optimizer.state_dict(backend)}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_flat_and_per_parameter_training_are_bitwise_equal(pair, opt):
    (loss_a, state_a), (loss_b, state_b) = (_train(b, OPTIMIZERS[opt]) for b in pair)
    assert loss_a == loss_b
    assert state_a.keys() == state_b.keys()
    for k, v in state_a.items():
        np.testing.assert_array_equal(v, state_b[k], err_msg=k)


def test_flat_clipping_equals_per_parameter_clipping_within_rounding(pair):
    def make():
        return nnx.Adam(3e-3, clip_norm=0.05)

    (_, a), (_, b) = (_train(backend, make) for backend in pair)
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_allclose(v, b[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            assert v == b[k], k


def test_a_cnn_with_batchnorm_trains_the_same_on_both_paths(pair):
    rng = np.random.default_rng(4)
    x = rng.random((24, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 3, 24)
    results = []
    for backend in pair:
        model = nnx.cnn((6, 6, 1), 3, filters=(4,), dense=8, batchnorm=True)
        tr = nnx.Trainer(model, "cross_entropy", nnx.Adam(1e-2), device=backend, seed=1)
        tr.fit(x, y, epochs=2, batch_size=8)
        results.append(tr.model.get_weights())
        if backend.flat_params:
            assert tr.model.parameter_buffer.intact()
    for k, v in results[0].items():
        np.testing.assert_array_equal(v, results[1][k], err_msg=k)


@nnx.register_layer
class _ReassigningScale(nnx.Layer):
    """A custom layer that reassigns its gradient (``grads[k] = grads[k] + ...``), which the
    layer contract allows: the buffer must take the new array back before the update."""

    builtin = True  # its backward is right; skip the central-difference check

    def __init__(self, n):
        super().__init__()
        self.n_in = self.n_out = n

    def init(self, backend, rng, dtype="float32"):
        self.params["s"] = backend.asarray(rng.uniform(0.5, 1.5, self.n_in), dtype)
        super().init(backend, rng, dtype)

    def forward(self, x, *, train=False):
        xp = nnx.backends.array_namespace(x)
        s = self.params["s"]

        def backward(dy):
            self.grads["s"] = self.grads["s"] + xp.sum(dy * x, axis=0)
            return dy * s

        return x * s, backward

    def config(self):
        return {"n": self.n_in}


def test_a_layer_that_reassigns_its_gradient_trains_the_same(pair):
    def model():
        return nnx.Sequential([nnx.Dense(5, 6), _ReassigningScale(6), nnx.ActivationLayer("tanh"),
                               nnx.Dense(6, 3)])

    (loss_a, a), (loss_b, b) = (_train(backend, OPTIMIZERS["adam"], model=model())
                                for backend in pair)
    assert loss_a == loss_b
    for k, v in a.items():
        np.testing.assert_array_equal(v, b[k], err_msg=k)


def test_a_reassigned_parameter_is_what_the_next_step_updates(pair):
    backend, _ = pair
    model = nnx.mlp([3, 2]).init(backend, 0)
    layer = model.layers[0]
    layer.params["w"] = backend.asarray(np.ones((3, 2)), "float32")  # not in place
    x = backend.asarray(np.ones((4, 3)), "float32")
    out, backward = model.forward(x, train=True)
    backward(out * 0.0 + 1.0, need_dx=False)  # dL/dw = 4 everywhere
    nnx.SGD(0.125).step(model)
    np.testing.assert_array_equal(backend.to_numpy(layer.params["w"]), np.full((3, 2), 0.5))
    assert model.parameter_buffer.intact()
    assert not np.any(backend.to_numpy(model.parameter_buffer.grads))


def test_a_copy_of_a_model_packs_its_own_buffers(pair):
    backend, _ = pair
    model = nnx.mlp([3, 4, 2]).init(backend, 0)
    twin = copy.deepcopy(model, {id(backend): backend})
    buf, twin_buf = model.parameter_buffer, twin.parameter_buffer
    assert twin_buf is not buf and twin_buf.intact()
    twin_buf.params[...] = 7.0
    assert np.all(backend.to_numpy(twin.layers[0].params["w"]) == 7.0)
    assert not np.any(backend.to_numpy(model.layers[0].params["w"]) == 7.0)
    # an optimizer copied after training keeps its state and builds its own flat state
    x, y = _data(n_in=3, classes=2)
    opt = nnx.Adam(1e-2)
    tr = nnx.Trainer(model, "cross_entropy", opt, device=backend)
    tr.fit(x, y, epochs=1, batch_size=32)
    opt_twin = copy.deepcopy(opt)
    state = opt.state_dict(backend)
    for k, v in opt_twin.state_dict(backend).items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)


def test_the_optimizer_state_is_flat_and_its_entries_are_views(pair):
    backend, _ = pair
    model = nnx.mlp([3, 4, 2]).init(backend, 0)
    x, y = _data(n_in=3, classes=2)
    opt = nnx.Adam(1e-2)
    nnx.Trainer(model, "cross_entropy", opt, device=backend).fit(x, y, epochs=1, batch_size=32)
    buffer, flats = opt._flat[0], opt._flat[1]
    assert buffer is model.parameter_buffer and set(flats) == {"m", "v"}
    flats["m"][...] = 3.0
    for name in buffer.names:
        assert np.all(backend.to_numpy(opt.state[name]["m"]) == 3.0), name
    # a loaded state replaces the entries: the next step copies them into a new flat state
    saved = opt.state_dict(backend)
    opt.load_state_dict(saved, backend)
    opt.step(model)
    assert opt._flat[1]["m"] is not flats["m"]


def test_the_optimizer_costs_the_same_operations_for_any_number_of_layers():
    counted = counting_backend(get_backend_or_skip("numpy"))
    x, y = _data(n_in=4, classes=2)
    per_step = []
    for sizes in ([4, 2], [4, 8, 8, 8, 8, 2]):
        model = nnx.mlp(sizes).init(counted, 0)
        opt = nnx.Adam(1e-3, clip_norm=1.0, weight_decay=1e-2)
        out, backward = model.forward(counted.asarray(x, "float32"), train=True)
        backward(out, need_dx=False)
        opt.step(model)  # the first step creates the state
        before = counted.counts.ops
        opt.step(model)
        per_step.append(counted.counts.ops - before)
    # Adam 13, clipping 6, decay and zeroing 1 each
    assert per_step[0] == per_step[1] <= 21, per_step
