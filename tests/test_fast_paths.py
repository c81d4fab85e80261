"""Backend fast paths (``backend.fast``) give bitwise the results of the standard path.

Each backend that registers ``out=`` functions is compared with a copy of
itself whose ``fast`` is None: the kernels one by one, then whole training
runs with every optimizer that uses them. The fast path must also stay off
where it cannot write (read-only arrays) and be used where it can.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import GPU_DEVICES, float_dtypes, get_backend_or_skip

import nnx
from nnx.testing.counting import counting_backend

FAST_DEVICES = [pytest.param(d, marks=[pytest.mark.gpu] if d in GPU_DEVICES else [])
                for d in ("numpy", "torch", "cuda", "torch:cuda")]


@pytest.fixture(params=FAST_DEVICES)
def pair(request):
    """(backend with its fast path, the same backend without it)."""
    fast = get_backend_or_skip(request.param)
    assert fast.fast is not None, f"{fast.label} registers no fast path"
    return fast, dataclasses.replace(fast, fast=None, label=f"{fast.label}-standard")


def _host(backend, a):
    return backend.to_numpy(a)


def test_strict_has_no_fast_path():
    assert get_backend_or_skip("strict").fast is None
    assert get_backend_or_skip("strict:device1").fast is None


def test_out_kernels_equal_the_expressions(pair):
    backend, _ = pair
    xp, f = backend.xp, backend.fast
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((33, 17)), "float32")
    b = backend.asarray(rng.random((33, 17)) + 0.5, "float32")
    cases = [(lambda o: f.multiply(a, b, out=o), a * b),
             (lambda o: f.multiply(a, 0.37, out=o), a * 0.37),
             (lambda o: f.divide(a, b, out=o), a / b), (lambda o: f.sqrt(b, out=o), xp.sqrt(b))]
    for kernel, want in cases:
        out = xp.zeros_like(a)
        kernel(out)
        np.testing.assert_array_equal(_host(backend, out), _host(backend, want))
    # the output may be an input
    c = xp.asarray(b, copy=True)
    f.divide(a, c, out=c)
    np.testing.assert_array_equal(_host(backend, c), _host(backend, a / b))


OPTIMIZERS = {
    "momentum": lambda: nnx.SGD(0.05, momentum=0.9),
    "momentum+wd+clip": lambda: nnx.SGD(0.05, momentum=0.9, weight_decay=1e-3, clip_norm=0.5),
    "nesterov": lambda: nnx.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: nnx.Adam(3e-3),
    "adamw+l2": lambda: nnx.AdamW(3e-3, l2=1e-3),
}


#: the products of the dense layer, which may round differently (tested apart, below)
PRODUCTS = ("linear", "addmm_")


def _without_products(backend):
    return dataclasses.replace(backend, fast=dataclasses.replace(
        backend.fast, **{name: None for name in PRODUCTS}))


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_training_is_bitwise_equal_with_and_without_the_fast_path(pair, opt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((96, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    weights, losses = [], []
    for backend in (_without_products(pair[0]), pair[1]):
        tr = nnx.Trainer(nnx.mlp([5, 16, 3]), "cross_entropy", OPTIMIZERS[opt](),
                         device=backend)
        losses.append(tr.fit(x, y, epochs=3, batch_size=16)["loss"])
        weights.append({**tr.model.get_weights(), **tr.optimizer.state_dict(backend)})
    assert losses[0] == losses[1]
    assert weights[0].keys() == weights[1].keys()
    for k, v in weights[0].items():
        np.testing.assert_array_equal(v, weights[1][k], err_msg=k)


def test_the_fast_path_is_used_where_it_can_write():
    backend = counting_backend(get_backend_or_skip("numpy"))
    x = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    for opt, kernels in [(nnx.SGD(0.1, momentum=0.9), {"multiply"}),
                         (nnx.Adam(1e-3), {"sqrt", "divide"})]:
        backend.counts.by_name.clear()
        nnx.Trainer(nnx.mlp([4, 8, 2]), "cross_entropy", opt, device=backend).fit(
            x, y, epochs=1, batch_size=16)
        # 4 steps; once a step on the flat buffer of the whole model
        used = {k for k in kernels if backend.counts.by_name.get(k, 0) >= 4}
        assert used == kernels, backend.counts.by_name


def test_read_only_arrays_take_the_standard_path():
    """NumPy arrays that cannot be written are updated by reassignment, as before (each
    parameter its own array: read-only views of a flat buffer would pin the buffer)."""
    backend = dataclasses.replace(get_backend_or_skip("numpy"), flat_params=False)
    results = []
    for read_only in (False, True):
        model = nnx.mlp([3, 4, 2]).init(backend, 0)
        opt = nnx.Adam(1e-2)
        x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
        for _ in range(3):
            out, backward = model.forward(x, train=True)
            backward(out * (1.0 / 8), need_dx=False)
            if read_only:
                for _, _, grads in model.parameters():
                    for g in grads.values():
                        g.flags.writeable = False
            opt.step(model)
        results.append(model.get_weights())
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_relu_of_wide_rows_equals_max_with_zero(backend):
    """relu is max with zero, bitwise, for rows of any width (and NaN, -0.0, infinities)."""
    xp = backend.xp
    rng = np.random.default_rng(3)
    for shape in [(4, 40), (3, 31), (64,), (2, 3, 33)]:
        host = rng.standard_normal(shape).astype(np.float32)
        host.flat[:4] = [-np.inf, np.inf, -0.0, np.nan]
        z = backend.asarray(host, "float32")
        a = nnx.activations.relu(z)
        assert a.dtype == z.dtype and a.device == z.device and tuple(a.shape) == shape
        want = np.maximum(host, np.float32(0))
        np.testing.assert_array_equal(backend.to_numpy(a), want)
        assert backend.to_numpy(xp.maximum(z, 0.0)).tobytes() == backend.to_numpy(a).tobytes()


# --- the namespace: hot functions routed to the library's own ------------------------

NS_DEVICES = [pytest.param(d, marks=[pytest.mark.gpu] if d in GPU_DEVICES else [])
              for d in ("numpy", "torch", "cuda", "torch:cuda")]


def _ns_cases(backend):
    """(function name, positional arguments, keyword arguments) covering every override:
    equal dtypes (the direct call), mixed dtypes and Python scalars (the wrapper's path)."""
    rng = np.random.default_rng(5)
    host = rng.standard_normal((6, 5)).astype(np.float32)
    host.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    a, b = backend.asarray(host, "float32"), backend.asarray(host[::-1].copy(), "float32")
    v = backend.asarray(host[1], "float32")
    idx = backend.asarray(np.array([4, 0, 0, 5, 2]), "int64")
    cols = backend.asarray(rng.integers(0, 5, (6, 1)), "int64")
    cond = a > b
    cases = [
        ("matmul", (a, b.mT), {}), ("matmul", (b, v), {}),
        ("take", (a, idx), {"axis": 0}), ("take", (a, idx[:3]), {"axis": 1}),
        ("take", (v, idx[:2]), {}),
        ("take_along_axis", (a, cols), {"axis": -1}), ("take_along_axis", (a, cols), {"axis": 1}),
        ("maximum", (a, 0.0), {}), ("maximum", (a, b), {}), ("maximum", (a, -0.0), {}),
        ("minimum", (a, 0.0), {}), ("minimum", (a, b), {}), ("minimum", (a, 2), {}),
        ("where", (cond, a, b), {}), ("where", (cond, a, 0.0), {}), ("where", (cond, 1.5, b), {}),
        ("vecdot", (v, v), {}), ("vecdot", (a, b), {}), ("vecdot", (a, b), {"axis": 0}),
    ]
    if backend.has_float64:
        d = backend.asarray(host, "float64")
        cases += [("matmul", (a, d.mT), {}), ("maximum", (a, d), {}), ("where", (cond, a, d), {}),
                  ("vecdot", (v, d[1]), {}), ("minimum", (d, a), {})]
    return cases


@pytest.mark.parametrize("device", NS_DEVICES)
def test_namespace_overrides_give_bitwise_the_wrapper_results(device):
    backend = get_backend_or_skip(device)
    xp = backend.xp
    assert xp.overridden, f"{backend.label} routes no function directly"
    seen = set()
    for name, args, kwargs in _ns_cases(backend):
        if name not in xp.overridden:
            continue
        seen.add(name)
        got, want = getattr(xp, name)(*args, **kwargs), getattr(xp.base, name)(*args, **kwargs)
        assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape), name
        assert _host(backend, got).tobytes() == _host(backend, want).tobytes(), (name, kwargs)
    assert seen == set(xp.overridden)


@pytest.mark.parametrize("device", NS_DEVICES + ["strict", "strict:device1"])
def test_array_namespace_returns_the_backends_namespace(device):
    from array_api_compat import array_namespace as compat_namespace

    backend = get_backend_or_skip(device)
    x = backend.asarray(np.ones((2, 3)), "float32")
    assert nnx.backends.array_namespace(x) is backend.xp
    assert nnx.backends.array_namespace(x) is backend.xp  # the remembered answer
    assert nnx.backends.array_namespace(x, x) is backend.xp
    assert getattr(backend.xp, "base", backend.xp) is compat_namespace(x)
    counted = counting_backend(backend)
    y = counted.asarray(np.ones((2, 3)), "float32")
    # a proxy array's namespace is its own (it counts), whatever its name says
    assert nnx.backends.array_namespace(y) is counted.xp


def test_a_negative_index_raises_instead_of_counting_from_the_end_on_torch():
    backend = get_backend_or_skip("torch")
    x = backend.asarray(np.arange(6.0).reshape(3, 2), "float32")
    with pytest.raises(IndexError):
        backend.xp.take(x, backend.asarray(np.array([-1]), "int64"), axis=0)


# --- fused kernels (CuPy): one launch for an update or an activation's backward -------

FUSED = ("sgd_update", "rmsprop_update", "adam_update", "relu_backward",
         "leaky_relu_backward", "sigmoid_backward", "tanh_backward")


def _unfused(backend):
    """The same backend with its out= functions but without fused kernels."""
    return dataclasses.replace(backend, fast=dataclasses.replace(
        backend.fast, **{name: None for name in FUSED}), label=f"{backend.label}-unfused")


def test_only_cupy_registers_fused_kernels_and_torch_relus():
    fast = get_backend_or_skip("numpy").fast
    assert all(getattr(fast, name) is None for name in FUSED)
    fast = get_backend_or_skip("torch").fast
    assert [name for name in FUSED if getattr(fast, name) is not None] == ["relu_backward"]


@pytest.mark.parametrize("device", NS_DEVICES)
def test_relu_backward_equals_the_portable_one_where_values_are_finite(device):
    backend = get_backend_or_skip(device)
    kernel = backend.fast.relu_backward
    if kernel is None:
        pytest.skip(f"{backend.label} has no relu backward kernel")
    act = nnx.activations.get_activation("relu")
    rng = np.random.default_rng(10)
    host = rng.standard_normal((33, 70)).astype(np.float32)
    host.flat[:4] = [0.0, -0.0, 1e-30, -1e-30]
    for dtype in float_dtypes(backend):
        z = backend.asarray(host, dtype)
        dy = backend.asarray(rng.standard_normal(host.shape), dtype)
        a = act.forward(z)
        got, want = kernel(dy, z, a), act.backward(dy, z=z, a=a)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(_host(backend, got), _host(backend, want))


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["relu", "leaky_relu:0.1", "sigmoid", "tanh"])
def test_fused_activation_backward_is_bitwise_the_unfused_one(activation):
    backend = get_backend_or_skip("cuda")
    act = nnx.activations.get_activation(activation)
    rng = np.random.default_rng(6)
    host = rng.standard_normal((37, 19)).astype(np.float32) * 3
    host.flat[:4] = [0.0, -0.0, np.inf, -np.inf]
    for dtype in ("float32", "float64"):
        z = backend.asarray(host, dtype)
        dy = backend.asarray(rng.standard_normal(host.shape), dtype)
        a = act.forward(z)
        kernel = getattr(backend.fast, f"{act.name}_backward")
        got = kernel(dy, z, a) if act.param is None else kernel(dy, z, a, alpha=act.param)
        want = act.backward(dy, z=z, a=a)
        assert got.dtype == want.dtype
        assert _host(backend, got).tobytes() == _host(backend, want).tobytes(), (activation, dtype)


FUSED_OPTIMIZERS = {
    "sgd": lambda: nnx.SGD(0.1), "momentum": lambda: nnx.SGD(0.05, momentum=0.9),
    "nesterov+l2": lambda: nnx.SGD(0.05, momentum=0.9, nesterov=True, l2=1e-3),
    "rmsprop": lambda: nnx.RMSProp(3e-3),
    "adam+clip": lambda: nnx.Adam(3e-3, clip_norm=0.5),
    "adamw": lambda: nnx.AdamW(3e-3),
}


@pytest.mark.gpu
@pytest.mark.parametrize("opt", list(FUSED_OPTIMIZERS))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu:0.1", "sigmoid", "tanh"])
def test_training_with_fused_kernels_is_bitwise_the_unfused_training(opt, activation):
    fused = get_backend_or_skip("cuda")
    x = np.random.default_rng(7).standard_normal((96, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    results = []
    for backend in (fused, _unfused(fused)):
        tr = nnx.Trainer(nnx.mlp([5, 16, 8, 3], activation=activation), "cross_entropy",
                         FUSED_OPTIMIZERS[opt](), device=backend)
        losses = tr.fit(x, y, epochs=3, batch_size=16)["loss"]
        results.append((losses, {**tr.model.get_weights(), **tr.optimizer.state_dict(backend)}))
        assert not np.any(backend.to_numpy(tr.model.parameter_buffer.grads))
    (loss_a, a), (loss_b, b) = results
    assert loss_a == loss_b
    for k, v in a.items():
        np.testing.assert_array_equal(v, b[k], err_msg=k)


@pytest.mark.gpu
def test_fused_kernels_are_used_once_a_step():
    backend = counting_backend(get_backend_or_skip("cuda"))
    x = np.random.default_rng(8).standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    for opt, kernel in [(nnx.SGD(0.1, momentum=0.9), "sgd_update"),
                        (nnx.Adam(1e-3), "adam_update"), (nnx.RMSProp(1e-3), "rmsprop_update")]:
        backend.counts.by_name.clear()
        nnx.Trainer(nnx.mlp([4, 8, 8, 2]), "cross_entropy", opt, device=backend).fit(
            x, y, epochs=1, batch_size=16)
        assert backend.counts.by_name.get(kernel) == 4, backend.counts.by_name
        assert backend.counts.by_name.get("relu_backward") == 4 * 2, backend.counts.by_name


# --- the dense layer's one-call products (torch addmm) ----------------------------------

@pytest.mark.parametrize("device", NS_DEVICES)
def test_dense_products_equal_the_standard_ones_within_rounding(device):
    backend = get_backend_or_skip(device)
    if backend.fast.linear is None and backend.fast.addmm_ is None:
        pytest.skip(f"{backend.label} has no one-call products")
    standard = _without_products(backend)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((128, 40)).astype(np.float32)
    dy = rng.standard_normal((128, 24)).astype(np.float32)
    bias = rng.standard_normal(24)
    results = []
    for b in (backend, standard):
        layer = nnx.Dense(40, 24)
        layer.init(b, np.random.default_rng(0))
        layer.params["b"][...] = b.asarray(bias, "float32")
        xd = b.asarray(x, "float32")
        y, back = layer.forward(xd, train=True)
        for _ in range(2):  # the second adds into the first
            dx = back(b.asarray(dy, "float32"))
        results.append([b.to_numpy(a) for a in (y, dx, layer.grads["w"], layer.grads["b"])])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the first step of a run with the products trains like one without, within rounding
    xs = rng.standard_normal((64, 5)).astype(np.float32)
    ys = (xs[:, 0] > 0).astype(np.int64)
    weights = []
    for b in (backend, standard):
        tr = nnx.Trainer(nnx.mlp([5, 16, 2]), "cross_entropy", nnx.SGD(0.1, momentum=0.9),
                         device=b)
        tr.fit(xs, ys, epochs=2, batch_size=16)
        weights.append(tr.model.get_weights())
    for k, v in weights[0].items():
        np.testing.assert_allclose(v, weights[1][k], rtol=1e-4, atol=1e-5, err_msg=k)
