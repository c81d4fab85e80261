"""The doctor's detectors, each on a run that shows its failure."""

from __future__ import annotations

import numpy as np
import pytest
from doctor_runs import blobs, by_id, train, with_weights

import nnx

# failures on purpose overflow float32; NumPy says so
pytestmark = pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")


def test_dead_relu_blames_the_layer():
    x, y = blobs(600)
    model = nnx.mlp([2, 32, 32, 3]).init("cpu", 0)

    def kill_half_of_layer_two(w):
        w["dense_2.b"][:16] = -100.0
    report = train(with_weights(model, kill_half_of_layer_two), x, y, epochs=5)
    f = by_id(report.findings, "dead-relu")
    assert f.layers == ["dense_2"]
    assert 16 <= f.evidence["dense_2"]["dead_units"] <= 18
    everything = with_weights(nnx.mlp([2, 32, 3]).init("cpu", 0),
                              lambda w: w.__setitem__("dense_0.b", w["dense_0.b"] - 100))
    f = by_id(train(everything, x, y, epochs=3).findings, "dead-relu")
    assert f.severity == "error" and f.layers == ["dense_0"]


def test_saturated_units_blames_the_layer():
    x, y = blobs(600)
    model = nnx.mlp([2, 16, 16, 3], activation="tanh").init("cpu", 0)
    report = train(with_weights(model, lambda w: w["dense_2.w"].__imul__(30.0)), x, y,
                   epochs=5)
    f = by_id(report.findings, "saturated-units")
    assert f.layers == ["dense_2"]
    sig = nnx.mlp([2, 32, 3], activation="sigmoid", init="normal:8").init("cpu", 0)
    assert by_id(train(sig, x, y, epochs=5).findings, "saturated-units").layers == ["dense_0"]


def test_vanishing_and_tiny_gradients_in_a_deep_sigmoid_stack():
    x, y = blobs(600)
    model = nnx.mlp([2] + [16] * 14 + [3], activation="sigmoid")
    report = train(model, x, y, epochs=8)
    f = by_id(report.findings, "vanishing-gradients")
    assert f.severity == "warning" and f.layers[0] == "dense_0"
    assert f.evidence["first_to_last_ratio"] < 1e-2
    tiny = by_id(report.findings, "tiny-gradients")
    assert "dense_0" in tiny.layers and "dense_28" not in tiny.layers
    assert "loss-plateau" in report


def test_exploding_gradients():
    x, y = blobs(600)
    chaotic = nnx.mlp([2] + [64] * 10 + [3], activation="tanh", init="normal:1")
    f = by_id(train(chaotic, x, y, lr=1e-3, epochs=2).findings, "exploding-gradients")
    assert "input" in f.title and "dense_0" in f.layers
    growing = nnx.mlp([2, 64, 64, 3])
    f = by_id(train(growing, x, y, optimizer="sgd", lr=3.0, epochs=3, batch_size=64).findings,
              "exploding-gradients")
    assert f.steps and f.evidence["growth"] > 100


def test_non_finite_names_step_and_layer():
    x, y = blobs(600)
    report = train(nnx.mlp([2, 64, 64, 3]), x, y, optimizer="momentum", lr=30.0, epochs=3)
    f = by_id(report.findings, "non-finite")
    assert f.severity == "error" and f.layers and f.steps[0] < 10
    assert "lr-too-high" in report.ids("warning")


def test_zero_init_zero_gradients_and_stalled_weights():
    x, y = blobs(600)
    report = train(nnx.mlp([2, 16, 16, 3], init="zeros"), x, y, epochs=4)
    assert {"symmetric-units", "zero-gradients", "loss-plateau"} <= report.ids("warning")
    f = by_id(report.findings, "zero-gradients")
    assert f.severity == "error" and f.layers == ["dense_0", "dense_2", "dense_4"]
    sym = by_id(report.findings, "symmetric-units")
    assert sym.evidence["identical_after_training"] == 16
    # the weights stopped, and the report says why rather than sending the user elsewhere
    stalled = by_id(report.findings, "stalled-weights")
    assert "explained by symmetric-units" in stalled.title
    full = train(nnx.mlp([2, 8, 3], init="zeros"), x, y, epochs=80, batch_size="full")
    assert "stalled-weights" in full
    assert "symmetric-units" in full.ids("error")


def test_learning_rate_too_high_and_too_low():
    x, y = blobs(600, spread=2.0)
    high = train(nnx.mlp([2, 16, 3], activation="tanh"), x, y, lr=8.0, epochs=200,
                 batch_size="full")
    assert "lr-too-high" in high.ids("warning")
    assert by_id(high.findings, "lr-too-high").evidence["lr"] == 8.0
    low = train(nnx.mlp([2, 16, 3]), x, y, lr=1e-6, epochs=5)
    f = by_id(low.findings, "lr-too-low")
    # at least tenfold, towards updates of about 1e-3 of the weights (those measure 4e-7)
    assert f.severity == "warning" and 1e-5 <= f.action["lr"] <= 1e-3
    assert f"--lr {f.action['lr']:g}" in f.fix


def test_initial_loss_off():
    x, y = blobs(600)
    report = train(nnx.mlp([2, 32, 3], init="normal:3"), x, y, epochs=1)
    f = by_id(report.findings, "initial-loss-off")
    assert f.evidence["initial_loss"] > 2 * np.log(3)
    assert "initial-loss-off" not in train(nnx.mlp([2, 32, 3]), x, y, epochs=1)


def test_loss_spikes_and_oscillation():
    # full-batch gradient descent with a step too large for the curvature
    x, y = blobs(600, spread=2.0)
    report = train(nnx.mlp([2, 16, 3], activation="tanh"), x, y, lr=8.0, epochs=200,
                   batch_size="full")
    f = by_id(report.findings, "loss-spikes")
    assert f.evidence["spikes"] >= 3 and f.steps
    assert "loss-oscillation" in report.ids("warning")
    calm = train(nnx.mlp([2, 16, 3], activation="tanh"), x, y, lr=1.0, epochs=200,
                 batch_size="full")
    assert not {"loss-spikes", "loss-oscillation"} & calm.ids()


def test_overfitting():
    x, y = blobs(1000, spread=2.0)
    report = train(nnx.mlp([2, 256, 256, 3]), x[:40], y[:40], optimizer="adam", lr=3e-3,
                   epochs=150, batch_size=20, validation_data=(x[500:], y[500:]))
    f = by_id(report.findings, "overfitting")
    assert f.severity == "warning" and f.evidence["final_val_loss"] > f.evidence["best_val_loss"]


def test_class_imbalance_and_a_model_that_predicts_the_majority():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4)).astype(np.float32)  # features carry no signal
    y = (rng.random(600) < 0.05).astype(np.int64)
    report = train(nnx.mlp([4, 16, 2]), x, y, lr=0.05, epochs=10)
    titles = [f.title for f in report.get("class-imbalance")]
    assert len(titles) == 2 and any("predicts that class" in t for t in titles)


# --- causes the doctor names since the detectors read the forward signal, the budget,
# the schedule, the penalty and the baselines ---------------------------------------------

def spirals():
    import nnx.data

    ds = nnx.data.load("spirals")
    return ds.x_train.astype(np.float32), ds.y_train.astype(np.int64)


def binary_blobs():
    x, y = blobs(600, k=2)
    return x, y


def test_signal_dying_in_the_forward_pass():
    # small initial weights in a deep tanh stack: each layer divides the spread by ~18
    x, y = binary_blobs()
    report = train(nnx.mlp([2] + [32] * 6 + [2], activation="tanh", init="normal:0.01"), x, y,
                   epochs=10)
    f = by_id(report.findings, "vanishing-activations")
    assert f.severity == "warning" and "dense_10" in f.layers and "dense_0" not in f.layers
    assert f.evidence["output_std"]["dense_10"] < 1e-4 * f.evidence["output_std"]["dense_0"]
    assert f.action == {"init": "auto"} and "--init auto" in f.fix
    # the gradient findings it explains are notes, and none claims what is not measured
    for g in report.findings:
        if g.id in ("vanishing-gradients", "tiny-gradients", "exploding-gradients"):
            assert g.severity == "info", g
        if g.id == "tiny-gradients" and "below float32 resolution" in g.title:
            assert max(g.evidence["update_ratios"].values()) < 2.0 ** -24
    assert "below-baseline" in report.ids("warning")


def test_under_training():
    x, y = spirals()  # full-batch SGD at 0.01 for 100 steps: still falling, near chance
    report = train(nnx.mlp([2, 64, 64, 3]), x, y, lr=0.01, epochs=100, batch_size="full")
    f = by_id(report.findings, "under-training")
    assert f.severity == "warning" and "--lr 0.1" in f.fix and "--epochs 400" in f.fix
    assert f.evidence["fall_last_quarter"] > 0.02 and f.evidence["accuracy_gain"] < 0.5


def test_over_regularised_is_not_a_learning_rate():
    x, y = blobs(600)
    model = nnx.mlp([2, 32, 3])
    trainer_kw = dict(lr=0.1, epochs=10)
    from nnx.optim import get_optimizer

    report = train(model, x, y, optimizer=get_optimizer("sgd", lr=0.1, l2=1.0), **trainer_kw)
    f = by_id(report.findings, "over-regularised")
    assert f.severity == "warning" and "--l2 0.01" in f.fix and f.action == {"l2": 0.01}
    assert "lr-too-high" not in report.ids("warning")
    adamw = train(nnx.mlp([2, 32, 3]), x, y, epochs=10,
                  optimizer=get_optimizer("adamw", lr=1e-3, weight_decay=100.0), lr=1e-3)
    assert by_id(adamw.findings, "over-regularised").action == {"weight_decay": 1.0}


def test_a_schedule_that_drives_the_learning_rate_to_zero_is_named():
    from nnx.schedules import Exponential

    x, y = spirals()
    report = train(nnx.mlp([2, 64, 64, 3]), x, y, epochs=20,
                   schedule=Exponential(0.1, 0.95))  # meant per epoch, applied per step
    f = by_id(report.findings, "lr-schedule-collapse")
    assert f.severity == "warning" and "exponential from 0.1, times 0.95 every step" in f.title
    assert f.action == {"schedule": "per-epoch"}
    assert not report.ids("error")  # the weights stopped, but the schedule is why


def test_baselines_for_classification_and_regression():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3)).astype(np.float32)
    y_cls = rng.integers(0, 3, 600)  # labels that do not depend on the inputs
    report = train(nnx.mlp([3, 16, 3]), x, y_cls, optimizer="adam", lr=1e-3, epochs=5)
    f = by_id(report.findings, "below-baseline")
    assert f.severity == "warning" and f.evidence["majority_share"] < 0.4
    # unscaled regression targets: worse than predicting the mean, with the likely cause
    y_reg = (x @ np.array([[3.0], [2.0], [1.0]]) * 3e4 + 1e5).astype(np.float32)
    report = train(nnx.mlp([3, 16, 1]), x, y_reg, loss="mse", optimizer="adam", lr=1e-3,
                   epochs=5)
    f = by_id(report.findings, "below-baseline")
    assert "not scaled" in f.cause and "y_train.std(0)" in f.fix
    assert f.action == {"standardize_targets": True}
    assert not {"loss-spikes", "lr-too-high"} & report.ids("warning")


# --- no false alarms: sampling noise, causes without symptoms -----------------------------

def test_hard_batches_are_not_spikes():
    # 2% of the points carry another cluster's label: a batch holding one jumps, the epoch
    # and validation losses fall smoothly
    x, y = blobs(1000, seed=4)
    hard = np.random.default_rng(1).random(1000) < 0.02
    y = y.copy()
    y[hard] = (y[hard] + 1) % 3
    for batch, optimizer, lr in ((8, "adam", 3e-3), (16, "sgd", 0.1), (4, "momentum", 0.01)):
        report = train(nnx.mlp([2, 32, 3]), x[:800], y[:800], optimizer=optimizer, lr=lr,
                       epochs=8, batch_size=batch, validation_data=(x[800:], y[800:]))
        assert report.healthy, report.summary()


def test_initial_loss_far_from_ln_c_on_a_run_that_trains_to_100_percent_is_a_note():
    x, y = blobs(600, spread=0.5)
    report = train(nnx.mlp([2, 32, 3], init="normal:3"), x, y, optimizer="adam", lr=3e-3,
                   epochs=20)
    assert report.trace.epochs[-1]["accuracy"] >= 0.99
    f = by_id(report.findings, "initial-loss-off")
    assert f.severity == "info" and "training still reached 99" in f.title
    assert report.healthy


def test_overfitting_handled_by_early_stopping_is_a_note():
    from nnx.doctor import Doctor
    from nnx.train import EarlyStopping, Trainer

    x, y = blobs(1000, spread=2.0)
    stop = EarlyStopping(patience=5, restore_best_weights=True)
    doctor = Doctor(verbose=False)
    Trainer(nnx.mlp([2, 256, 256, 3]), optimizer="adam", lr=3e-3,
            callbacks=[doctor, stop]).fit(x[:40], y[:40], epochs=150, batch_size=20,
                                          validation_data=(x[500:], y[500:]))
    assert stop.stopped_epoch is not None
    f = by_id(doctor.report.findings, "overfitting")
    assert f.severity == "info" and "restored" in f.title


def test_image_models_dead_filters_and_their_learning_rate():
    import nnx.data

    ds = nnx.data.load("digits")
    x, y = ds.x_train.reshape(-1, 8, 8, 1).astype(np.float32), ds.y_train
    model = nnx.cnn((8, 8, 1), 10, filters=(8, 16), dense=32, dropout=0.0)
    # sampled every 10 steps: enough examples in 135 steps to call single filters dead
    report = train(model, x, y, lr=3.0, epochs=3, verify_fixes=True, every=10)
    dead = by_id(report.findings, "dead-relu")
    assert dead.severity == "error" and {"conv2d_0", "conv2d_3"} <= set(dead.layers)
    high = by_id(report.findings, "lr-too-high")
    assert high.severity == "error" and "first updates" in high.title
    assert report.recommendation.verified is not None
    assert report.recommendation.action["lr"] < 3.0
