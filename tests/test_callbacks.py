"""Callbacks: the hooks and their order, stopping, early stopping, checkpoints, the
learning-rate callbacks and the non-finite mode.

The reporting callbacks (progress bar, CSV and JSON-lines loggers) are in
test_loggers.py, History and its plot in test_history.py.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from small_trainers import Script, mlp_trainer

import nnx
from nnx.errors import ConfigError
from nnx.train import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNonFinite,
    Trainer,
)


@pytest.fixture(scope="module")
def data():
    return nnx.data.blobs(n=120, classes=3, seed=0)


def _fit_quiet(trainer, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer.fit(*args, **kwargs)


class Recorder(Callback):
    def __init__(self, name, events):
        self.name, self.events = name, events

    def on_train_begin(self, trainer):
        self.events.append((self.name, "train_begin"))

    def on_epoch_begin(self, trainer, epoch):
        self.events.append((self.name, "epoch_begin", epoch))

    def on_backward_end(self, trainer, state):
        self.events.append((self.name, "backward_end", state.step, state.epoch, state.batch))

    def on_step_end(self, trainer, state):
        self.events.append((self.name, "step_end", state.step))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append((self.name, "epoch_end", epoch, sorted(logs)))

    def on_train_end(self, trainer):
        self.events.append((self.name, "train_end"))


# --- hooks ------------------------------------------------------------------------------------


def test_hooks_fire_in_order(data, tmp_path):
    events = []
    a, b = Recorder("a", events), Recorder("b", events)
    tr = mlp_trainer(callbacks=[a])
    tr.fit(data.x_train[:40], data.y_train[:40], epochs=2, batch_size=16,
           callbacks=[ModelCheckpoint(tmp_path / "c.npz"), b])
    keys = ["accuracy", "loss", "lr", "time"]
    expected = [("a", "train_begin"), ("b", "train_begin")]
    step = 0
    for epoch in range(2):
        expected += [("a", "epoch_begin", epoch), ("b", "epoch_begin", epoch)]
        for batch in range(3):  # 16 + 16 + 8
            expected += [("a", "backward_end", step, epoch, batch),
                         ("b", "backward_end", step, epoch, batch),
                         ("a", "step_end", step), ("b", "step_end", step)]
            step += 1
        expected += [("a", "epoch_end", epoch, keys), ("b", "epoch_end", epoch, keys)]
    expected += [("a", "train_end"), ("b", "train_end")]
    assert events == expected
    # ModelCheckpoint ran its on_epoch_end after b's although it comes first in the list
    assert tr.active_callbacks[1].last_saved == (str(tmp_path / "c.npz"), 2)


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(("epoch_begin", epoch))

    def on_backward_end(self, trainer, state):
        self.events.append(("backward_end", state.step))

    def on_step_end(self, trainer, state):
        self.events.append(("step_end", state.step))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, trainer):
        self.events.append("train_end")


def test_callbacks_fire_in_order():
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    y = np.arange(10) % 2
    rec = _Recorder()
    Trainer(nnx.mlp([2, 4, 2])).fit(x, y, epochs=2, batch_size=5, callbacks=[rec])
    expected = ["train_begin"]
    step = 0
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for _ in range(2):
            expected += [("backward_end", step), ("step_end", step)]
            step += 1
        expected.append(("epoch_end", epoch))
    expected.append("train_end")
    assert rec.events == expected


def test_step_state_holds_device_arrays(data):
    seen = []

    class Look(Callback):
        def on_backward_end(self, trainer, state):
            grads = trainer.model.layers[0].grads["w"]
            seen.append((state.x.shape, state.y.shape, state.output.shape, state.loss.shape,
                         float(np.abs(grads).sum()) > 0))

        def on_step_end(self, trainer, state):
            # the optimizer zeroed the gradients after the update
            assert float(np.abs(trainer.model.layers[0].grads["w"]).sum()) == 0

    mlp_trainer().fit(data.x_train[:40], data.y_train[:40], epochs=1, batch_size=16,
                   callbacks=[Look()])
    assert seen == [((16, 2), (16,), (16, 3), (), True), ((16, 2), (16,), (16, 3), (), True),
                    ((8, 2), (8,), (8, 3), (), True)]


def test_train_end_runs_when_training_fails(data):
    events = []
    x = data.x_train.copy()
    with pytest.raises(nnx.DataError):
        mlp_trainer().fit(x[:, :1], data.y_train, epochs=1, batch_size=32,
                       callbacks=[Recorder("r", events)])
    assert events == []  # the data check comes before anything starts

    class Boom(Callback):
        def on_step_end(self, trainer, state):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        mlp_trainer().fit(x, data.y_train, epochs=1, batch_size=32,
                       callbacks=[Recorder("r", events), Boom()])
    assert events[-1] == ("r", "train_end")


def test_stop_training_ends_fit_after_the_current_step(data):
    class Stop(Callback):
        def on_step_end(self, trainer, state):
            if state.step == 4:
                trainer.stop_training = True

    tr = mlp_trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=5, batch_size=16, callbacks=[Stop()])
    assert tr.step == 5 and len(h) == 1


# --- early stopping ---------------------------------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_weights(data):
    weights = []

    class Keep(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            weights.append(trainer.model.get_weights())

    stop = EarlyStopping("val_loss", patience=2)
    tr = mlp_trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=10, batch_size=32,
               validation_data=(data.x_test, data.y_test),
               callbacks=[Script("val_loss", [1.0, 0.5, 0.7, 0.8, 0.9, 0.1]), Keep(), stop])
    assert len(h) == 4 and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for k, v in weights[1].items():
        np.testing.assert_array_equal(tr.model.get_weights()[k], v, err_msg=k)
    assert not np.array_equal(weights[3]["dense_0.w"], weights[1]["dense_0.w"])


def test_early_stopping_restores_the_best_weights(blobs_300):
    class Spoil(Callback):  # keeps the weights of every epoch
        def __init__(self):
            self.weights = {}

        def on_epoch_end(self, trainer, epoch, logs):
            self.weights[epoch] = trainer.model.get_weights()

    spoil = Spoil()
    tr = Trainer(nnx.mlp([2, 16, 3]), optimizer=nnx.SGD(0.05), seed=0)
    stop = EarlyStopping("val_loss", patience=2)

    class Worsen(Callback):  # from epoch 3 on, each epoch starts from scrambled weights
        def on_epoch_begin(self, trainer, epoch):
            if epoch >= 3:
                rng = np.random.default_rng(epoch)
                trainer.model.set_weights({k: 20 * rng.standard_normal(v.shape).astype(v.dtype)
                                           for k, v in trainer.model.get_weights().items()})

    h = _fit_quiet(tr, blobs_300.x_train, blobs_300.y_train, epochs=30, batch_size=16,
                   validation_data=(blobs_300.x_test, blobs_300.y_test),
                   callbacks=[Worsen(), stop, spoil])
    assert stop.stopped_epoch is not None and len(h) < 30
    best = int(np.argmin(h["val_loss"]))
    assert stop.best_epoch == best
    final = tr.model.get_weights()
    for k, v in spoil.weights[best].items():
        np.testing.assert_array_equal(final[k], v)
    assert tr.evaluate(blobs_300.x_test, blobs_300.y_test)["loss"] == pytest.approx(
        min(h["val_loss"]), rel=1e-5)


def test_early_stopping_without_restore_keeps_the_last_weights(data):
    stop = EarlyStopping("loss", patience=1, restore_best_weights=False)
    tr = mlp_trainer()
    tr.fit(data.x_train, data.y_train, epochs=5, batch_size=32,
           callbacks=[Script("loss", [1.0, 2.0, 3.0, 4.0, 5.0]), stop])
    assert len(tr.history) == 2 and stop.best_weights is None


def test_early_stopping_on_accuracy_and_min_delta(data):
    stop = EarlyStopping("val_accuracy", patience=2, min_delta=0.05)
    assert stop.mode == "max"
    mlp_trainer().fit(data.x_train, data.y_train, epochs=10, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_accuracy", [0.5, 0.54, 0.53, 0.9, 0.9]), stop])
    assert stop.stopped_epoch == 2 and stop.best == 0.5


def test_early_stopping_without_validation_watches_the_training_loss(data):
    stop = EarlyStopping("val_loss", patience=1)
    with pytest.warns(UserWarning, match="no validation data; watching the training 'loss'"):
        mlp_trainer().fit(data.x_train, data.y_train, epochs=4, batch_size=32,
                       callbacks=[Script("loss", [1.0, 1.0, 1.0, 1.0]), stop])
    assert stop.stopped_epoch == 1


def test_a_monitor_that_is_not_logged_is_a_config_error(data):
    with pytest.raises(ConfigError, match="'val_acc', which is not logged.*val_accuracy"):
        mlp_trainer().fit(data.x_train, data.y_train, epochs=2, batch_size=32,
                       validation_split=0.2, callbacks=[EarlyStopping("val_acc")])
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="patience"):
            EarlyStopping(patience=bad)
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(mode="up")


def test_nonfinite_values_never_count_as_improvements(data):
    stop = EarlyStopping("val_loss", patience=2)
    mlp_trainer().fit(data.x_train, data.y_train, epochs=5, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_loss", [1.0, math.nan, math.nan, 0.5, 0.4]), stop])
    assert stop.stopped_epoch == 2 and stop.best == 1.0


# --- checkpoints ------------------------------------------------------------------------------


def test_model_checkpoint_save_best_only(data, tmp_path):
    ck = ModelCheckpoint(tmp_path / "best-{epoch}.npz", save_best_only=True)
    mlp_trainer().fit(data.x_train, data.y_train, epochs=5, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_loss", [1.0, 0.8, 0.9, 0.7, 0.75]), ck])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-1.npz", "best-2.npz",
                                                          "best-4.npz"]
    assert ck.last_saved == (str(tmp_path / "best-4.npz"), 4) and ck.best == 0.7
    meta = nnx.checkpoint.load_checkpoint(tmp_path / "best-4.npz")["meta"]
    assert meta["epoch"] == 4 and meta["callbacks"]["ModelCheckpoint_0"]["best"] == 0.7


def test_model_checkpoint_every_epoch_overwrites_one_file(data, tmp_path):
    path = tmp_path / "ckpt.npz"
    ck = ModelCheckpoint(path)
    mlp_trainer().fit(data.x_train, data.y_train, epochs=3, batch_size=32, callbacks=[ck])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left
    assert nnx.checkpoint.load_checkpoint(path)["meta"]["epoch"] == 3


# --- learning rate ----------------------------------------------------------------------------


class LrLog(Callback):
    def __init__(self):
        self.lrs = []

    def on_backward_end(self, trainer, state):
        self.lrs.append(trainer.optimizer.lr)


def test_learning_rate_scheduler_sets_the_rate_of_every_step(data):
    sched = nnx.schedules.Warmup(nnx.schedules.Cosine(0.1, total_steps=16), warmup_steps=4)
    log = LrLog()
    tr = mlp_trainer(optimizer=nnx.SGD(0.1))
    h = tr.fit(data.x_train, data.y_train, epochs=4, batch_size=24,
               callbacks=[LearningRateScheduler(sched), log])
    assert tr.step == 16
    assert log.lrs == [sched(s) for s in range(16)]
    assert h["lr"] == [sched(s) for s in (4, 8, 12, 16)]  # the rate for the next step


def test_learning_rate_scheduler_sets_the_rate_every_step():
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    y = np.arange(30) % 3
    seen = []

    class Watch(Callback):
        def on_backward_end(self, trainer, state):
            seen.append((state.step, trainer.optimizer.lr))

    tr = Trainer(nnx.mlp([2, 4, 3]), optimizer=nnx.SGD(1.0))
    tr.fit(x, y, epochs=2, batch_size=10,
           callbacks=[LearningRateScheduler(lambda s: 0.1 / (s + 1)), Watch()])
    assert [s for s, _ in seen] == list(range(6))
    assert [lr for _, lr in seen] == pytest.approx([0.1 / (s + 1) for s in range(6)])


def test_trainer_schedule_argument_is_applied_before_each_step(data):
    log = LrLog()
    sched = nnx.schedules.StepDecay(0.1, step_size=2, gamma=0.5)
    tr = mlp_trainer(optimizer=nnx.SGD(0.1), schedule=sched, callbacks=[log])
    tr.fit(data.x_train, data.y_train, epochs=2, batch_size=48)
    assert log.lrs == [sched(s) for s in range(tr.step)]


def test_reduce_lr_on_plateau(data):
    log = LrLog()
    rp = ReduceLROnPlateau("val_loss", factor=0.5, patience=2, min_lr=0.02)
    tr = mlp_trainer(optimizer=nnx.SGD(0.1))
    h = tr.fit(data.x_train, data.y_train, epochs=7, batch_size="full", validation_split=0.2,
               callbacks=[Script("val_loss", [1, 1, 1, 1, 1, 1, 1]), rp, log])
    # halved after every 2 epochs without improvement; the rate of each epoch is logged
    assert h["lr"] == log.lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert tr.optimizer.lr == 0.02  # not below min_lr


def test_reduce_lr_on_plateau_lowers_the_rate():
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 2, 40)  # noise: the loss plateaus
    tr = Trainer(nnx.mlp([2, 2]), optimizer=nnx.SGD(1e-7), seed=0)
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1.0, min_lr=0.0)
    h = tr.fit(x, y, epochs=5, batch_size=40, callbacks=[plateau])
    assert tr.optimizer.lr < 1e-7
    assert h["lr"][-1] < h["lr"][0]


def test_reduce_lr_on_plateau_with_a_schedule_warns(data):
    with pytest.warns(UserWarning, match="undoes the reduction"):
        mlp_trainer(schedule=nnx.schedules.Constant(0.01)).fit(
            data.x_train, data.y_train, epochs=1, batch_size=32,
            callbacks=[ReduceLROnPlateau("loss")])


# --- non-finite -------------------------------------------------------------------------------


def test_terminate_on_nonfinite_selects_the_mode(data):
    tr = mlp_trainer()
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=32,
           callbacks=[TerminateOnNonFinite("skip")])
    assert tr.on_nonfinite == "skip" and tr.history["skipped"] == [0]
    with pytest.raises(ConfigError, match="on_nonfinite"):
        TerminateOnNonFinite("warn")


# --- where callbacks are imported from --------------------------------------------------------


def test_every_callback_is_importable_from_nnx_callbacks():
    from nnx.train import hooks, loggers

    for name in nnx.callbacks.__all__:
        assert getattr(nnx.callbacks, name) is getattr(nnx.train, name), name
    assert nnx.callbacks.Callback is hooks.Callback and nnx.callbacks.StepState is hooks.StepState
    assert {nnx.callbacks.ProgressBar, nnx.callbacks.CSVLogger,
            nnx.callbacks.JSONLinesLogger} == {loggers.ProgressBar, loggers.CSVLogger,
                                               loggers.JSONLinesLogger}
    assert nnx.doctor.Doctor.__mro__[1] is Callback
