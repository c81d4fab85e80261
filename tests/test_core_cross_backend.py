"""The same short training run gives the same result on every backend.

Weights are drawn on the host, shuffles come from the host generator, so from
one seed every backend starts from identical weights, sees the batches in the
same order and ends at the same loss within float32 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnx

EPOCHS = 50  # 4 batches an epoch: 200 SGD steps
RTOL = 1e-4


@pytest.fixture(scope="module")
def problem():
    ds = nnx.data.spirals(n=300, classes=3, noise=0.1, seed=0)
    return ds.x_train, ds.y_train


def _run(device, problem, dtype="float32"):
    x, y = problem
    model = nnx.mlp([2, 24, 24, 3], activation="tanh")
    trainer = nnx.Trainer(model, "cross_entropy", nnx.SGD(0.5, momentum=0.5), device=device,
                          seed=11, dtype=dtype)
    initial = model.get_weights()
    history = trainer.fit(x, y, epochs=EPOCHS, batch_size=64)
    assert trainer.step == EPOCHS * 4
    return initial, history["loss"], model.get_weights(), trainer.evaluate(x, y)


@pytest.fixture(scope="module")
def reference(problem):
    return _run("numpy", problem)


def test_reference_run_learns(reference):
    _, losses, _, metrics = reference
    assert losses[-1] < 0.5 * losses[0]
    assert metrics["accuracy"] > 0.7


def test_same_run_on_every_backend(backend, problem, reference):
    ref_initial, ref_losses, ref_final, ref_metrics = reference
    initial, losses, final, metrics = _run(backend, problem)
    assert set(initial) == set(ref_initial)
    for k in ref_initial:
        np.testing.assert_array_equal(initial[k], ref_initial[k], err_msg=f"initial {k}")
    assert len(losses) == EPOCHS
    np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=RTOL)
    for k in ref_final:
        np.testing.assert_allclose(final[k], ref_final[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_float32_tracks_float64(problem, reference):
    # the float32 run is a rounding of the float64 one, not a different trajectory
    _, losses64, _, _ = _run("numpy", problem, dtype="float64")
    np.testing.assert_allclose(reference[1], losses64, rtol=1e-3)
