"""Trainer.fit as a user drives it: learning on every backend, accuracy floors, labels,
batches, validation, and the pieces of an epoch (its batches and the one accumulator
shared with evaluation).

Elsewhere: non-finite steps in test_nonfinite.py, predict and evaluate in
test_predict.py, host reads in test_syncs.py, callbacks in test_callbacks.py, the
data checks in test_data_checks.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from small_trainers import adam_trainer

import nnx
from nnx import backends
from nnx.errors import ConfigError
from nnx.train import Callback, LearningRateScheduler, Trainer

# --- learning ---------------------------------------------------------------------------------


def test_fit_reduces_loss_on_every_backend(backend, blobs_400):
    tr = adam_trainer(backend, seed=3)
    h = tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=4, batch_size=32,
               validation_data=(blobs_400.x_test, blobs_400.y_test))
    assert len(h) == 4 and h["epoch"] == [1, 2, 3, 4]
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > 0.9 and h["val_accuracy"][-1] > 0.9
    assert all(isinstance(v, float) for k in ("loss", "accuracy", "val_loss", "lr", "time")
               for v in h[k])
    assert tr.step == 4 * math.ceil(len(blobs_400.x_train) / 32)
    # the parameters stay on the trainer's device, in its dtype
    w = tr.model.layers[0].params["w"]
    xp = backend.xp
    assert w.device == backend.device and w.dtype == xp.float32


def test_fit_reduces_the_loss(blobs_300):
    tr = Trainer(nnx.mlp([2, 16, 3]), "cross_entropy", "adam", lr=0.01, seed=1)
    h = tr.fit(blobs_300.x_train, blobs_300.y_train, epochs=5, batch_size=32)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > h["accuracy"][0]


@pytest.mark.parametrize("device", ["strict:device1", "torch"])
def test_the_loop_runs_on_other_backends(device, blobs_300):
    try:
        b = backends.get(device)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    tr = Trainer(nnx.mlp([2, 16, 3], dropout=0.1), optimizer="adam", lr=0.01, device=b, seed=0)
    h = tr.fit(blobs_300.x_train, blobs_300.y_train, epochs=3, batch_size=32,
               validation_data=(blobs_300.x_test, blobs_300.y_test))
    assert h["loss"][-1] < h["loss"][0] and h["val_accuracy"][-1] > 0.8
    w = tr.model.layers[0].params["w"]
    assert w.device == b.device


def test_model_built_elsewhere_moves_to_the_trainers_device(blobs_400):
    model = nnx.mlp([2, 8, 3]).init("numpy", 0)
    before = model.get_weights()
    tr = Trainer(model, device="strict:device1")
    assert tr.model.backend.label == "strict:device1"
    for k, v in tr.model.get_weights().items():
        np.testing.assert_array_equal(v, before[k])
    tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=1, batch_size=64)


def test_regression_logs_mae_and_mse():
    ds = nnx.data.regression(n=300, features=3, seed=0)
    tr = Trainer(nnx.mlp([3, 16, 1]), "mse", "adam", lr=0.01)
    h = tr.fit(ds.x_train, ds.y_train, epochs=5, batch_size=32, validation_split=0.2)
    assert {"loss", "mae", "mse", "val_loss", "val_mae", "val_mse"} <= set(h.history)
    assert "accuracy" not in h
    assert h["mse"] == h["loss"]  # the MSE loss is the MSE metric: not computed twice
    assert h["loss"][-1] < h["loss"][0]
    ev = tr.evaluate(ds.x_test, ds.y_test)
    pred = tr.predict(ds.x_test)
    assert pred.shape == (len(ds.x_test), 1)
    np.testing.assert_allclose(ev["mae"], np.abs(pred - ds.y_test).mean(), rtol=1e-5)
    np.testing.assert_allclose(ev["mse"], ((pred - ds.y_test) ** 2).mean(), rtol=1e-5)


def test_binary_cross_entropy_with_one_output(blobs_400):
    ds = nnx.data.moons(n=300, seed=0)
    tr = Trainer(nnx.mlp([2, 16, 1]), "bce", "adam", lr=0.02)
    h = tr.fit(ds.x_train, ds.y_train, epochs=10, batch_size=32)
    assert h["accuracy"][-1] > 0.8
    proba = tr.predict_proba(ds.x_test)
    assert proba.shape == (len(ds.x_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(np.unique(tr.predict(ds.x_test))) <= {0, 1}


def test_one_hot_labels_give_the_same_run_as_integer_labels(blobs_400):
    y1 = np.eye(3, dtype=np.float32)[blobs_400.y_train]
    a = adam_trainer(seed=2).fit(blobs_400.x_train, blobs_400.y_train, epochs=2, batch_size=40)
    b = adam_trainer(seed=2).fit(blobs_400.x_train, y1, epochs=2, batch_size=40)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    assert a["accuracy"] == b["accuracy"]


# --- accuracy floors --------------------------------------------------------------------------


def test_spirals_reach_97_percent_test_accuracy():
    """Acceptance: a small MLP with Adam separates the three spirals."""
    ds = nnx.data.spirals(seed=0)
    tr = Trainer(nnx.mlp([2, 64, 64, 3]), "cross_entropy", "adam", lr=0.01, seed=0)
    tr.fit(ds.x_train, ds.y_train, epochs=60, batch_size=64, validation_split=0.1)
    result = tr.evaluate(ds.x_test, ds.y_test)
    assert result["accuracy"] >= 0.97, result
    assert (tr.predict(ds.x_test) == ds.y_test).mean() == pytest.approx(result["accuracy"])


def test_spirals_accuracy_floor():
    ds = nnx.data.spirals()
    tr = Trainer(nnx.mlp([2, 64, 64, 3]), "cross_entropy", nnx.Adam(0.01), seed=0)
    tr.fit(ds.x_train, ds.y_train, epochs=60, batch_size=32)
    assert tr.evaluate(ds.x_test, ds.y_test)["accuracy"] >= 0.97


def test_digits_accuracy_floor_with_the_command_line_defaults():
    ds = nnx.data.load("digits")
    tr = Trainer(nnx.mlp([64, 256, 128, 10]), "cross_entropy", nnx.Adam(1e-3), seed=0)
    h = tr.fit(ds.x_train, ds.y_train, epochs=30, batch_size=64, validation_split=0.1)
    assert h["val_accuracy"][-1] > 0.9
    assert tr.evaluate(ds.x_test, ds.y_test)["accuracy"] >= 0.95


# --- batches ----------------------------------------------------------------------------------


def test_full_batch_is_one_step_per_epoch(blobs_400):
    for bs in ("full", len(blobs_400.x_train)):
        tr = adam_trainer(lr=0.05)
        h = tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=5, batch_size=bs)
        assert tr.steps_per_epoch == 1 and tr.step == 5
        assert h["loss"][-1] < h["loss"][0]


def test_full_batch_and_mini_batch_step_counts(blobs_300):
    n = len(blobs_300.x_train)
    full = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.5), seed=0)
    h = full.fit(blobs_300.x_train, blobs_300.y_train, epochs=20, batch_size="full")
    assert full.step == 20 and full.batch_size == n
    assert h["loss"][-1] < h["loss"][0]
    mini = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.5), seed=0)
    mini.fit(blobs_300.x_train, blobs_300.y_train, epochs=2, batch_size=50)
    assert mini.step == 2 * -(-n // 50)


def test_batch_larger_than_data_is_clamped_with_a_warning(blobs_400):
    tr = adam_trainer()
    with pytest.warns(UserWarning, match="larger than the .* training examples"):
        tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=1, batch_size=10**6)
    assert tr.batch_size == len(blobs_400.x_train) and tr.steps_per_epoch == 1


def test_warnings_of_fit_point_at_the_caller(blobs_400, tmp_path):
    tr = adam_trainer()
    with pytest.warns(UserWarning, match="larger than the") as caught:
        tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=1, batch_size=10**6)
    assert [w.filename for w in caught] == [__file__]
    nnx.save_checkpoint(tmp_path / "c.npz", tr)
    with pytest.warns(UserWarning, match="will not match an uninterrupted run") as caught:
        adam_trainer().fit(blobs_400.x_train[:50], blobs_400.y_train[:50], epochs=2, batch_size=25,
                       resume=tmp_path / "c.npz", force_resume=True)
    assert [w.filename for w in caught] == [__file__]
    with pytest.warns(UserWarning, match="nothing to train") as caught:
        adam_trainer().fit(blobs_400.x_train, blobs_400.y_train, epochs=1, batch_size="full",
                       resume=tmp_path / "c.npz")
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.parametrize("bad", [0, -4, 2.5, "big", True])
def test_bad_batch_size_is_a_config_error(blobs_400, bad):
    with pytest.raises(ConfigError, match="batch size"):
        adam_trainer().fit(blobs_400.x_train, blobs_400.y_train, epochs=1, batch_size=bad)


def test_last_partial_batch_is_kept_and_weighted_by_its_size():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    # learning rate 0: every step sees the initial model, so the epoch loss is its mean loss
    tr = adam_trainer(optimizer=nnx.SGD(0.1), lr=None,
                  callbacks=[LearningRateScheduler(lambda step: 0.0)])
    h = tr.fit(x, y, epochs=1, batch_size=4, shuffle=False)
    assert tr.steps_per_epoch == 3 and tr.step == 3  # batches of 4, 4 and 2
    expected = tr.evaluate(x, y)
    assert h["loss"][0] == pytest.approx(expected["loss"], rel=1e-6)
    assert h["accuracy"][0] == pytest.approx(expected["accuracy"])


def test_bad_epochs_and_validation_arguments(blobs_400):
    tr = adam_trainer()
    x, y = blobs_400.x_train, blobs_400.y_train
    for kw, match in [({"epochs": 0}, "epochs"), ({"epochs": 2.0}, "epochs"),
                      ({"validation_split": 1.0}, "validation_split"),
                      ({"validation_split": 0.2, "validation_data": (x, y)}, "not both"),
                      ({"validation_data": (x,)}, "pair")]:
        with pytest.raises(ConfigError, match=match):
            tr.fit(x, y, **{"epochs": 1, **kw})


# --- validation -------------------------------------------------------------------------------


def test_validation_split_is_stratified_and_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [300, 60, 40])
    x = rng.normal(size=(400, 2)).astype(np.float32) + y[:, None]
    tr = adam_trainer(seed=4)
    h = tr.fit(x, y, epochs=1, batch_size=64, validation_split=0.25)
    xv, yv = tr.validation_data
    assert np.bincount(yv).tolist() == [75, 15, 10]
    assert np.bincount(tr.y_train).tolist() == [225, 45, 30]
    assert "val_loss" in h and "val_accuracy" in h
    # no example is in both sets
    train_rows = {r.tobytes() for r in tr.x_train}
    assert not any(r.tobytes() in train_rows for r in xv)
    again = adam_trainer(seed=4)
    again.fit(x, y, epochs=1, batch_size=64, validation_split=0.25)
    np.testing.assert_array_equal(again.validation_data[0], xv)


def test_validation_split_is_stratified():
    y = np.repeat(np.arange(4), [40, 80, 120, 160])
    x = np.random.default_rng(0).normal(size=(len(y), 3)).astype(np.float32)
    tr = Trainer(nnx.mlp([3, 4, 4]), seed=0)
    tr.fit(x, y, epochs=1, batch_size=64, validation_split=0.25)
    _, yv = tr.validation_data
    assert np.bincount(yv, minlength=4).tolist() == [10, 20, 30, 40]
    assert len(tr.y_train) + len(yv) == len(y)


def test_validation_runs_in_eval_mode():
    """Dropout is off in validation: the validation loss of a fixed model does not vary."""
    ds = nnx.data.blobs(n=200, classes=3, seed=0)
    tr = Trainer(nnx.mlp([2, 32, 3], dropout=0.5), "cross_entropy", nnx.SGD(0.1),
                 callbacks=[LearningRateScheduler(lambda step: 0.0)])
    h = tr.fit(ds.x_train, ds.y_train, epochs=3, batch_size=32,
               validation_data=(ds.x_test, ds.y_test))
    assert h["val_loss"][0] == h["val_loss"][1] == h["val_loss"][2]
    assert h["val_loss"][0] == pytest.approx(tr.evaluate(ds.x_test, ds.y_test)["loss"])
    assert len(set(h["loss"])) == 3  # training used fresh dropout masks each epoch


# --- the pieces of an epoch: batches, one accumulator -----------------------------------------


class _HalfMSE(nnx.losses.Loss):
    """Half the mean squared error: a regression loss that is not the MSE, so the squared
    error is summed beside it."""

    name, task = "half_mse", "regression"

    def __call__(self, output, target):
        value, d = nnx.losses.MeanSquaredError()(output, target)
        return value / 2, d / 2


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "half_mse"])
def test_training_and_evaluation_share_one_accumulator(loss):
    """An epoch that does not change the model logs exactly what evaluate() returns on the
    same batches: the same sums, in the same order."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = (np.arange(50) % 3) if loss == "cross_entropy" else rng.normal(size=(50, 2))
    model = nnx.mlp([3, 6, 3 if loss == "cross_entropy" else 2])
    tr = Trainer(model, _HalfMSE() if loss == "half_mse" else loss, nnx.SGD(0.1), seed=1)

    class NoUpdate(Callback):  # plain SGD with zero gradients leaves every weight as it is
        def on_backward_end(self, trainer, state):
            trainer.model.zero_grads()

    h = tr.fit(x, y, epochs=1, batch_size=16, shuffle=False, callbacks=[NoUpdate()])
    logs = {k: v[0] for k, v in h.history.items()}
    ev = tr.evaluate(x, y, batch_size=16)
    assert set(ev) == ({"loss", "accuracy"} if loss == "cross_entropy" else {"loss", "mae", "mse"})
    assert {k: logs[k] for k in ev} == ev
    if loss == "half_mse":
        assert ev["mse"] == pytest.approx(2 * ev["loss"], rel=1e-6)


def test_batches_take_every_example_once_in_the_epoch_order():
    from nnx.train.batches import Batches, epoch_order

    b = backends.get("numpy")
    x = b.asarray(np.arange(10, dtype=np.float32)[:, None], "float32")
    y = b.asarray(np.arange(10), "int64")
    rng = np.random.default_rng(0)
    order = epoch_order(rng, 10, b, shuffle=True, full=False)
    batches = Batches(x, y, y, 4, order)
    parts = [batches.batch(i) for i in range(len(batches))]
    assert len(batches) == 3 and [len(p[1]) for p in parts] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), np.asarray(order))
    assert all(p[2] is p[1] for p in parts)  # integer labels are the targets themselves
    np.testing.assert_array_equal(np.concatenate([p[0][:, 0] for p in parts]), order)
    # no shuffle, or one full batch: no draw, and the generator does not advance
    state = rng.bit_generator.state
    assert epoch_order(rng, 10, b, shuffle=False, full=False) is None
    assert epoch_order(rng, 10, b, shuffle=True, full=True) is None
    assert rng.bit_generator.state == state


def test_dropped_batches_add_nothing_to_the_sums():
    from nnx.train.metrics import MetricSums

    b = backends.get("numpy")
    xp = b.xp
    out = b.asarray(np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), "float32")
    labels = b.asarray(np.array([0, 1, 1]), "int64")
    loss = nnx.get_loss("cross_entropy")
    kept = MetricSums(loss, b, "float32", skipping=True)
    kept.add(xp.asarray(0.5, dtype=xp.float32), out, labels, labels, 3, xp.asarray(True))
    kept.add(xp.asarray(float("nan"), dtype=xp.float32), out, labels, labels, 3,
             xp.asarray(False))
    assert kept.seen == 6 and kept.count() == 3
    assert kept.means() == {"loss": 0.5, "accuracy": 2 / 3}
    assert kept.state() == {"loss": 1.5, "correct": 2, "skipped_n": 3}
    # a resume point continues the sums exactly
    again = MetricSums(loss, b, "float32", skipping=True)
    again.load(kept.state(), kept.seen)
    assert again.means() == kept.means() and again.seen == 6
