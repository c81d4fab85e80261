"""The training loop: learning, batching, validation, data checks, host reads, non-finite steps."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from array_api_compat import array_namespace

import nnx
from nnx import backends
from nnx.errors import ConfigError, DataError, NonFiniteError
from nnx.testing.counting import count
from nnx.train import Callback, LearningRateScheduler, ProgressBar, Trainer


@pytest.fixture(scope="module")
def blobs():
    return nnx.data.blobs(n=400, classes=3, seed=1)


def _trainer(device="numpy", sizes=(2, 16, 3), **kw):
    kw.setdefault("optimizer", "adam")
    kw.setdefault("lr", 0.01)
    return Trainer(nnx.mlp(list(sizes)), device=device, **kw)


# --- learning -------------------------------------------------------------------


def test_fit_reduces_loss_on_every_backend(backend, blobs):
    tr = _trainer(backend, seed=3)
    h = tr.fit(blobs.x_train, blobs.y_train, epochs=4, batch_size=32,
               validation_data=(blobs.x_test, blobs.y_test))
    assert len(h) == 4 and h["epoch"] == [1, 2, 3, 4]
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > 0.9 and h["val_accuracy"][-1] > 0.9
    assert all(isinstance(v, float) for k in ("loss", "accuracy", "val_loss", "lr", "time")
               for v in h[k])
    assert tr.step == 4 * math.ceil(len(blobs.x_train) / 32)
    # the parameters stay on the trainer's device, in its dtype
    w = tr.model.layers[0].params["w"]
    xp = backend.xp
    assert w.device == backend.device and w.dtype == xp.float32


def test_spirals_reach_97_percent_test_accuracy():
    """Acceptance: a small MLP with Adam separates the three spirals."""
    ds = nnx.data.spirals(seed=0)
    tr = Trainer(nnx.mlp([2, 64, 64, 3]), "cross_entropy", "adam", lr=0.01, seed=0)
    tr.fit(ds.x_train, ds.y_train, epochs=60, batch_size=64, validation_split=0.1)
    result = tr.evaluate(ds.x_test, ds.y_test)
    assert result["accuracy"] >= 0.97, result
    assert (tr.predict(ds.x_test) == ds.y_test).mean() == pytest.approx(result["accuracy"])


def test_same_seed_same_run_on_every_cpu_backend(blobs):
    """Weights and shuffles come from the host generator: float64 runs agree across backends."""
    runs = {}
    for device in ("numpy", "strict:device1", "torch"):
        try:
            b = backends.get(device)
        except backends.BackendUnavailable:
            continue
        tr = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.1, momentum=0.9), device=b,
                     dtype="float64", seed=5)
        runs[device] = tr.fit(blobs.x_train, blobs.y_train, epochs=2, batch_size=50)["loss"]
    ref = runs.pop("numpy")
    for device, losses in runs.items():
        np.testing.assert_allclose(losses, ref, rtol=1e-12, err_msg=device)


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


def test_binary_cross_entropy_with_one_output(blobs):
    ds = nnx.data.moons(n=300, seed=0)
    tr = Trainer(nnx.mlp([2, 16, 1]), "bce", "adam", lr=0.02)
    h = tr.fit(ds.x_train, ds.y_train, epochs=10, batch_size=32)
    assert h["accuracy"][-1] > 0.8
    proba = tr.predict_proba(ds.x_test)
    assert proba.shape == (len(ds.x_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(np.unique(tr.predict(ds.x_test))) <= {0, 1}


def test_one_hot_labels_give_the_same_run_as_integer_labels(blobs):
    y1 = np.eye(3, dtype=np.float32)[blobs.y_train]
    a = _trainer(seed=2).fit(blobs.x_train, blobs.y_train, epochs=2, batch_size=40)
    b = _trainer(seed=2).fit(blobs.x_train, y1, epochs=2, batch_size=40)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    assert a["accuracy"] == b["accuracy"]


# --- batches --------------------------------------------------------------------


def test_full_batch_is_one_step_per_epoch(blobs):
    for bs in ("full", len(blobs.x_train)):
        tr = _trainer(lr=0.05)
        h = tr.fit(blobs.x_train, blobs.y_train, epochs=5, batch_size=bs)
        assert tr.steps_per_epoch == 1 and tr.step == 5
        assert h["loss"][-1] < h["loss"][0]


def test_batch_larger_than_data_is_clamped_with_a_warning(blobs):
    tr = _trainer()
    with pytest.warns(UserWarning, match="larger than the .* training examples"):
        tr.fit(blobs.x_train, blobs.y_train, epochs=1, batch_size=10**6)
    assert tr.batch_size == len(blobs.x_train) and tr.steps_per_epoch == 1


def test_warnings_of_fit_point_at_the_caller(blobs, tmp_path):
    tr = _trainer()
    with pytest.warns(UserWarning, match="larger than the") as caught:
        tr.fit(blobs.x_train, blobs.y_train, epochs=1, batch_size=10**6)
    assert [w.filename for w in caught] == [__file__]
    nnx.save_checkpoint(tmp_path / "c.npz", tr)
    with pytest.warns(UserWarning, match="will not match an uninterrupted run") as caught:
        _trainer().fit(blobs.x_train[:50], blobs.y_train[:50], epochs=2, batch_size=25,
                       resume=tmp_path / "c.npz")
    assert [w.filename for w in caught] == [__file__]
    with pytest.warns(UserWarning, match="nothing to train") as caught:
        _trainer().fit(blobs.x_train, blobs.y_train, epochs=1, batch_size="full",
                       resume=tmp_path / "c.npz")
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.parametrize("bad", [0, -4, 2.5, "big", True])
def test_bad_batch_size_is_a_config_error(blobs, bad):
    with pytest.raises(ConfigError, match="batch size"):
        _trainer().fit(blobs.x_train, blobs.y_train, epochs=1, batch_size=bad)


def test_last_partial_batch_is_kept_and_weighted_by_its_size():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    # learning rate 0: every step sees the initial model, so the epoch loss is its mean loss
    tr = _trainer(optimizer=nnx.SGD(0.1), lr=None,
                  callbacks=[LearningRateScheduler(lambda step: 0.0)])
    h = tr.fit(x, y, epochs=1, batch_size=4, shuffle=False)
    assert tr.steps_per_epoch == 3 and tr.step == 3  # batches of 4, 4 and 2
    expected = tr.evaluate(x, y)
    assert h["loss"][0] == pytest.approx(expected["loss"], rel=1e-6)
    assert h["accuracy"][0] == pytest.approx(expected["accuracy"])


def test_bad_epochs_and_validation_arguments(blobs):
    tr = _trainer()
    x, y = blobs.x_train, blobs.y_train
    for kw, match in [({"epochs": 0}, "epochs"), ({"epochs": 2.0}, "epochs"),
                      ({"validation_split": 1.0}, "validation_split"),
                      ({"validation_split": 0.2, "validation_data": (x, y)}, "not both"),
                      ({"validation_data": (x,)}, "pair")]:
        with pytest.raises(ConfigError, match=match):
            tr.fit(x, y, **{"epochs": 1, **kw})


# --- data checks ------------------------------------------------------------------


def test_data_problems_are_data_errors_that_say_where(blobs):
    tr = _trainer()
    x, y = blobs.x_train, blobs.y_train
    nan_x = x.copy()
    nan_x[7, 1] = np.nan
    bad_label = y.copy()
    bad_label[11] = 3
    cases = [
        ((x[:, :1], y), "1 features but the model expects 2"),
        ((x, y[:-1]), "y needs one entry"),
        ((nan_x, y), "row 7"),
        ((x, bad_label), "label 3 in row 11 is out of range"),
        ((x, y - 1), "label -1"),
        ((x[:, :, None], y), "must be 2-D"),
        ((x, y + 0.5), "whole numbers"),
        ((x[:0], y[:0]), "empty"),
    ]
    for (xx, yy), match in cases:
        with pytest.raises(DataError, match=match):
            tr.fit(xx, yy, epochs=1)
    with pytest.raises(DataError, match="validation data"):
        tr.fit(x, y, epochs=1, validation_data=(nan_x, y))
    assert tr.step == 0  # nothing ran


def test_regression_target_columns_must_match_outputs():
    x = np.zeros((20, 3), np.float32)
    tr = Trainer(nnx.mlp([3, 4, 2]), "mse")
    with pytest.raises(DataError, match="1 target column"):
        tr.fit(x, np.zeros(20), epochs=1)


# --- validation -------------------------------------------------------------------


def test_validation_split_is_stratified_and_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [300, 60, 40])
    x = rng.normal(size=(400, 2)).astype(np.float32) + y[:, None]
    tr = _trainer(seed=4)
    h = tr.fit(x, y, epochs=1, batch_size=64, validation_split=0.25)
    xv, yv = tr.validation_data
    assert np.bincount(yv).tolist() == [75, 15, 10]
    assert np.bincount(tr.y_train).tolist() == [225, 45, 30]
    assert "val_loss" in h and "val_accuracy" in h
    # no example is in both sets
    train_rows = {r.tobytes() for r in tr.x_train}
    assert not any(r.tobytes() in train_rows for r in xv)
    again = _trainer(seed=4)
    again.fit(x, y, epochs=1, batch_size=64, validation_split=0.25)
    np.testing.assert_array_equal(again.validation_data[0], xv)


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


# --- host reads -----------------------------------------------------------------------


class _EveryHook(Callback):
    """Implements every hook without reading anything: must not add host reads."""

    def __init__(self):
        self.steps = 0

    def on_backward_end(self, trainer, state):
        self.steps += 1

    def on_step_end(self, trainer, state):
        assert not isinstance(state.loss, float)


def _syncs(backend, batch_size, callbacks=(), **fit):
    ds = nnx.data.blobs(n=240, classes=3, seed=0)
    tr = Trainer(nnx.mlp([2, 8, 3], dropout=0.1), device=backend, lr=0.01)
    with count(backend) as c:
        tr.fit(ds.x_train, ds.y_train, epochs=3, batch_size=batch_size, callbacks=callbacks,
               **fit)
    return c.syncs, tr


def test_no_host_read_per_step():
    strict = backends.get("strict:device1")
    full, tr_full = _syncs(strict, "full")
    many, tr_many = _syncs(strict, 8, callbacks=[_EveryHook()],
                           validation_split=0.2)
    assert tr_full.steps_per_epoch == 1 and tr_many.steps_per_epoch == 20
    # host reads happen per epoch (loss, accuracy, validation), never per step
    val_reads = 2 * 3
    assert many == full + val_reads, (full, many)
    assert full <= 3 * 2


class _Tty:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_bar_reads_the_device_only_when_it_redraws():
    strict = backends.get("strict:device1")
    base, _ = _syncs(strict, 8)
    quiet, _ = _syncs(strict, 8, callbacks=[ProgressBar(stream=_Tty(), quiet=True)])
    tty = _Tty()
    live, tr = _syncs(strict, 8, callbacks=[ProgressBar(stream=tty, every=5)])
    assert quiet == base
    redraws = 3 * (tr.steps_per_epoch // 5)
    assert live == base + redraws
    assert tty.text.count("\r") >= redraws and tty.text.count("\n") == 3


# --- non-finite values ------------------------------------------------------------


def test_nonfinite_weights_are_named_with_step_and_layer(backend, blobs):
    tr = Trainer(nnx.mlp([2, 16, 16, 3], activation="sigmoid"), optimizer=nnx.SGD(0.1),
                 device=backend)
    w = tr.model.get_weights()
    w["dense_2.w"][3, 1] = np.inf
    tr.model.set_weights(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's inf * 0 warnings
        with pytest.raises(NonFiniteError) as err:
            tr.fit(blobs.x_train, blobs.y_train, epochs=2, batch_size=32)
    assert err.value.step == 0 and err.value.layer == "dense_2"
    assert "dense_2.w was already NaN or infinite before step 0" in str(err.value)
    assert len(tr.history) == 0


def test_huge_learning_rate_is_blamed_on_the_learning_rate(blobs):
    tr = Trainer(nnx.mlp([2, 16, 16, 3], activation="sigmoid"), optimizer=nnx.SGD(1e37))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow warnings
        with pytest.raises(NonFiniteError) as err:
            tr.fit(blobs.x_train, blobs.y_train, epochs=3, batch_size=32)
    e = err.value
    assert 0 < e.step < tr.steps_per_epoch and e.layer == "dense_4"
    msg = str(e)
    assert f"step {e.step}" in msg and "learning rate (1e+37) is far too high" in msg
    assert "--lr" in msg and "No checkpoint was written" in msg
    # the model is left as it was before the failing step: finite
    assert all(np.isfinite(v).all() for v in tr.model.get_weights().values())
    assert tr.step == e.step


class _Root(nnx.Layer):
    """``y = sqrt(|x|)``: finite everywhere, but its derivative is infinite at 0."""

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        y = xp.sqrt(xp.abs(x))

        def backward(dy):
            return dy * 0.5 * xp.sign(x) / y

        return y, backward


def test_nonfinite_gradient_is_traced_to_its_layer_and_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2)).astype(np.float32)
    x[3] = [0.0, 1.0]  # in the first batch of 8
    y = rng.integers(0, 3, 32)
    model = nnx.Sequential([nnx.Dense(2, 2), _Root(), nnx.Dense(2, 3)])
    tr = Trainer(model, optimizer=nnx.SGD(0.1))
    w = tr.model.get_weights()
    w["dense_0.w"] = np.eye(2, dtype=np.float32)  # pass x through unchanged
    tr.model.set_weights(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError) as err:
            tr.fit(x, y, epochs=2, batch_size=8, shuffle=False)
    assert err.value.step == 0 and err.value.layer == "_root_1"
    msg = str(err.value)
    assert "gradient in _root_1 became NaN or infinite at step 0 while the loss was finite" in msg
    assert "the loss was non-finite from step 1" in msg


def test_nonfinite_that_a_replay_does_not_repeat_is_still_reported():
    """As on a device that is not deterministic: the replay finds nothing, the step is named."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    tr = Trainer(nnx.mlp([2, 8, 8, 2], activation="sigmoid"), optimizer=nnx.SGD(0.1))

    class Poison(Callback):  # corrupt one gradient at global step 5
        def on_backward_end(self, trainer, state):
            if state.step == 5:
                trainer.model.layers[2].grads["b"][0] = np.nan

    with pytest.raises(NonFiniteError) as err:
        tr.fit(x, y, epochs=2, batch_size=8, callbacks=[Poison()], shuffle=False)
    assert err.value.step == 6 and "did not repeat it" in str(err.value)


def test_skip_mode_leaves_the_model_as_if_the_bad_step_never_ran():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    bad = x.copy()
    bad[:10] = 3e38  # the first batch overflows in the forward pass
    sizes = [2, 8, 3]
    skip = Trainer(nnx.mlp(sizes), optimizer=nnx.SGD(0.1, momentum=0.9), seed=7,
                   on_nonfinite="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h = skip.fit(bad, y, epochs=3, batch_size=10, shuffle=False)
    plain = Trainer(nnx.mlp(sizes), optimizer=nnx.SGD(0.1, momentum=0.9), seed=7)
    ref = plain.fit(x[10:], y[10:], epochs=3, batch_size=10, shuffle=False)
    assert h["skipped"] == [1, 1, 1]
    assert h["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    for k, v in plain.model.get_weights().items():
        np.testing.assert_allclose(skip.model.get_weights()[k], v, rtol=1e-6, err_msg=k)


def test_on_nonfinite_must_be_raise_or_skip():
    with pytest.raises(ConfigError, match="on_nonfinite"):
        _trainer(on_nonfinite="ignore")


# --- inference ---------------------------------------------------------------------------


def test_predict_and_evaluate_in_batches(blobs):
    tr = _trainer()
    tr.fit(blobs.x_train, blobs.y_train, epochs=2, batch_size=32)
    whole = tr.predict_proba(blobs.x_test)
    parts = tr.predict_proba(blobs.x_test, batch_size=7)
    np.testing.assert_allclose(parts, whole, rtol=1e-6)
    assert tr.evaluate(blobs.x_test, blobs.y_test, batch_size=7) == pytest.approx(
        tr.evaluate(blobs.x_test, blobs.y_test))
    with pytest.raises(DataError, match="2-D"):
        tr.predict(blobs.x_test[:, 0])


def test_model_built_elsewhere_moves_to_the_trainers_device(blobs):
    model = nnx.mlp([2, 8, 3]).init("numpy", 0)
    before = model.get_weights()
    tr = Trainer(model, device="strict:device1")
    assert tr.model.backend.label == "strict:device1"
    for k, v in tr.model.get_weights().items():
        np.testing.assert_array_equal(v, before[k])
    tr.fit(blobs.x_train, blobs.y_train, epochs=1, batch_size=64)
