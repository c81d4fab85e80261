"""One short training run, the same on every backend.

Initial weights and minibatch order come from host generators, so from one
seed every backend starts from the same weights and sees the same batches.
After a few hundred plain SGD steps the losses and weights agree with a NumPy
float64 run within float32 tolerance (float64 runs agree far more closely).
The update is written both by hand (``p = p - lr * g`` through the layer dicts,
which works on libraries without in-place updates) and with ``nnx.SGD``.

The same holds through the Trainer (one seed, the same losses on every CPU backend in
float64), and a model saved from one backend loads on the next.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.losses import get_loss
from nnx.train import Trainer

STEPS = 300


BATCH = 32


LR = 0.2


LOG_EVERY = 50


RTOL = {"float32": 2e-5, "float64": 1e-12}


MODELS = {
    "tanh": lambda: nnx.mlp([4, 16, 3], activation="tanh"),
    "relu-batchnorm": lambda: nnx.mlp([4, 16, 8, 3], activation="relu", batchnorm=True),
}


@functools.cache
def problem():
    """Three Gaussian classes in 4-D, and the minibatch order of every step."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 4)) * 1.5
    y = rng.integers(0, 3, 96)
    x = centers[y] + rng.standard_normal((96, 4))
    order = np.concatenate([rng.permutation(96) for _ in range(STEPS * BATCH // 96 + 1)])
    return x, y, order[: STEPS * BATCH].reshape(STEPS, BATCH)


def manual_sgd(model):
    for _, params, grads in model.parameters():
        for k in params:
            params[k] = params[k] - LR * grads[k]  # reassigned: no in-place update needed
    model.zero_grads()


def train(backend, dtype, model_name, update):
    """Losses every LOG_EVERY steps, the final full-batch loss and the final weights."""
    x_host, y_host, order = problem()
    xp = backend.xp
    model = MODELS[model_name]().init(backend, 0, dtype)
    x, y = backend.asarray(x_host, dtype), backend.asarray(y_host, "int64")
    loss = get_loss("cross_entropy")
    step_update = manual_sgd if update == "manual" else nnx.SGD(LR).step
    logged = []
    for step in range(STEPS):
        idx = backend.asarray(order[step], "int64")
        out, backward = model.forward(xp.take(x, idx, axis=0), train=True)
        value, d_out = loss(out, xp.take(y, idx, axis=0))
        backward(d_out, need_dx=False)
        step_update(model)
        if step % LOG_EVERY == 0:
            logged.append(value)
    final = loss(model.forward(x, train=False)[0], y)[0]
    host = [float(backend.to_numpy(v)) for v in (*logged, final)]  # read once, at the end
    return np.array(host[:-1]), host[-1], model.get_weights()


@functools.cache
def reference(model_name):
    return train(backends.get("numpy"), "float64", model_name, "sgd")


@pytest.mark.parametrize("model_name, update", [
    ("tanh", "manual"), ("tanh", "sgd"), ("relu-batchnorm", "sgd")])
def test_same_training_run_on_every_backend(backend, float_dtype, model_name, update):
    ref_losses, ref_final, ref_weights = reference(model_name)
    assert ref_final < 0.25 * ref_losses[0]  # it learns, so agreement means something

    losses, final, weights = train(backend, float_dtype, model_name, update)
    tol = RTOL[float_dtype]
    np.testing.assert_allclose(losses, ref_losses, rtol=tol)
    assert final == pytest.approx(ref_final, rel=tol)
    assert weights.keys() == ref_weights.keys()
    for k, w in weights.items():
        assert w.dtype == np.dtype(float_dtype)
        scale = np.max(np.abs(ref_weights[k]))
        assert np.max(np.abs(w - ref_weights[k])) <= tol * scale, k


def test_every_backend_starts_from_the_same_weights(backend):
    for name, make in MODELS.items():
        start = make().init(backend, 7).get_weights()
        expected = make().init("numpy", 7).get_weights()
        assert start.keys() == expected.keys()
        for k in start:
            np.testing.assert_array_equal(start[k], expected[k], err_msg=f"{name} {k}")


# --- through the Trainer, and through a saved model -------------------------------------------


def test_same_seed_same_run_on_every_cpu_backend(blobs_400):
    """Weights and shuffles come from the host generator: float64 runs agree across backends."""
    runs = {}
    for device in ("numpy", "strict:device1", "torch"):
        try:
            b = backends.get(device)
        except backends.BackendUnavailable:
            continue
        tr = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.1, momentum=0.9), device=b,
                     dtype="float64", seed=5)
        runs[device] = tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=2, batch_size=50)["loss"]
    ref = runs.pop("numpy")
    for device, losses in runs.items():
        np.testing.assert_allclose(losses, ref, rtol=1e-12, err_msg=device)


def test_save_load_round_trip_numpy_strict_torch(tmp_path):
    ds = nnx.data.blobs(n=120, features=3, seed=0)
    tr = nnx.Trainer(nnx.mlp([3, 16, 4], dropout=0.1, batchnorm=True), lr=0.01, seed=0)
    tr.fit(ds.x_train, ds.y_train, epochs=2, batch_size=16)
    ref = tr.predict_proba(ds.x_test)
    nnx.checkpoint.save(tr.model, tmp_path / "numpy.npz")
    path = tmp_path / "numpy.npz"
    for device in ("strict:device1", "torch"):
        try:
            backends.get(device)
        except backends.BackendUnavailable as exc:
            pytest.skip(str(exc))
        model = nnx.checkpoint.load(path, device=device)
        assert model.backend.label == device
        got = nnx.Trainer(model, device=device).predict_proba(ds.x_test)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=device)
        path = tmp_path / f"{device.replace(':', '-')}.npz"
        nnx.checkpoint.save(model, path)  # saved from this backend, loaded on the next
    final = nnx.checkpoint.load(path, device="numpy")
    for k, v in tr.model.get_weights().items():
        np.testing.assert_array_equal(final.get_weights()[k], v)
