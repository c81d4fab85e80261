"""Callbacks: hook order, early stopping, checkpoints, schedules, progress, loggers, History."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

import nnx
from nnx.errors import ConfigError
from nnx.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    JSONLinesLogger,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    TerminateOnNonFinite,
    Trainer,
)


@pytest.fixture(scope="module")
def data():
    return nnx.data.blobs(n=120, classes=3, seed=0)


def _trainer(**kw):
    if "optimizer" not in kw:
        kw["lr"] = 0.01
    return Trainer(nnx.mlp([2, 8, 3]), **kw)


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


class Script(Callback):
    """Overwrite ``logs[key]`` with scripted values, as if the model had produced them."""

    def __init__(self, key, values):
        self.key, self.values = key, list(values)

    def on_epoch_end(self, trainer, epoch, logs):
        logs[self.key] = self.values[epoch]


# --- hooks ----------------------------------------------------------------------------


def test_hooks_fire_in_order(data, tmp_path):
    events = []
    a, b = Recorder("a", events), Recorder("b", events)
    tr = _trainer(callbacks=[a])
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

    _trainer().fit(data.x_train[:40], data.y_train[:40], epochs=1, batch_size=16,
                   callbacks=[Look()])
    assert seen == [((16, 2), (16,), (16, 3), (), True), ((16, 2), (16,), (16, 3), (), True),
                    ((8, 2), (8,), (8, 3), (), True)]


def test_train_end_runs_when_training_fails(data):
    events = []
    x = data.x_train.copy()
    with pytest.raises(nnx.DataError):
        _trainer().fit(x[:, :1], data.y_train, epochs=1, batch_size=32,
                       callbacks=[Recorder("r", events)])
    assert events == []  # the data check comes before anything starts

    class Boom(Callback):
        def on_step_end(self, trainer, state):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _trainer().fit(x, data.y_train, epochs=1, batch_size=32,
                       callbacks=[Recorder("r", events), Boom()])
    assert events[-1] == ("r", "train_end")


def test_stop_training_ends_fit_after_the_current_step(data):
    class Stop(Callback):
        def on_step_end(self, trainer, state):
            if state.step == 4:
                trainer.stop_training = True

    tr = _trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=5, batch_size=16, callbacks=[Stop()])
    assert tr.step == 5 and len(h) == 1


# --- early stopping --------------------------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_weights(data):
    weights = []

    class Keep(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            weights.append(trainer.model.get_weights())

    stop = EarlyStopping("val_loss", patience=2)
    tr = _trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=10, batch_size=32,
               validation_data=(data.x_test, data.y_test),
               callbacks=[Script("val_loss", [1.0, 0.5, 0.7, 0.8, 0.9, 0.1]), Keep(), stop])
    assert len(h) == 4 and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for k, v in weights[1].items():
        np.testing.assert_array_equal(tr.model.get_weights()[k], v, err_msg=k)
    assert not np.array_equal(weights[3]["dense_0.w"], weights[1]["dense_0.w"])


def test_early_stopping_without_restore_keeps_the_last_weights(data):
    stop = EarlyStopping("loss", patience=1, restore_best_weights=False)
    tr = _trainer()
    tr.fit(data.x_train, data.y_train, epochs=5, batch_size=32,
           callbacks=[Script("loss", [1.0, 2.0, 3.0, 4.0, 5.0]), stop])
    assert len(tr.history) == 2 and stop.best_weights is None


def test_early_stopping_on_accuracy_and_min_delta(data):
    stop = EarlyStopping("val_accuracy", patience=2, min_delta=0.05)
    assert stop.mode == "max"
    _trainer().fit(data.x_train, data.y_train, epochs=10, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_accuracy", [0.5, 0.54, 0.53, 0.9, 0.9]), stop])
    assert stop.stopped_epoch == 2 and stop.best == 0.5


def test_early_stopping_without_validation_watches_the_training_loss(data):
    stop = EarlyStopping("val_loss", patience=1)
    with pytest.warns(UserWarning, match="no validation data; watching the training 'loss'"):
        _trainer().fit(data.x_train, data.y_train, epochs=4, batch_size=32,
                       callbacks=[Script("loss", [1.0, 1.0, 1.0, 1.0]), stop])
    assert stop.stopped_epoch == 1


def test_a_monitor_that_is_not_logged_is_a_config_error(data):
    with pytest.raises(ConfigError, match="'val_acc', which is not logged.*val_accuracy"):
        _trainer().fit(data.x_train, data.y_train, epochs=2, batch_size=32,
                       validation_split=0.2, callbacks=[EarlyStopping("val_acc")])
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="patience"):
            EarlyStopping(patience=bad)
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(mode="up")


def test_nonfinite_values_never_count_as_improvements(data):
    stop = EarlyStopping("val_loss", patience=2)
    _trainer().fit(data.x_train, data.y_train, epochs=5, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_loss", [1.0, math.nan, math.nan, 0.5, 0.4]), stop])
    assert stop.stopped_epoch == 2 and stop.best == 1.0


# --- checkpoints ------------------------------------------------------------------------


def test_model_checkpoint_save_best_only(data, tmp_path):
    ck = ModelCheckpoint(tmp_path / "best-{epoch}.npz", save_best_only=True)
    _trainer().fit(data.x_train, data.y_train, epochs=5, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_loss", [1.0, 0.8, 0.9, 0.7, 0.75]), ck])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-1.npz", "best-2.npz",
                                                          "best-4.npz"]
    assert ck.last_saved == (str(tmp_path / "best-4.npz"), 4) and ck.best == 0.7
    meta = nnx.checkpoint.load_checkpoint(tmp_path / "best-4.npz")["meta"]
    assert meta["epoch"] == 4 and meta["callbacks"]["ModelCheckpoint_0"]["best"] == 0.7


def test_model_checkpoint_every_epoch_overwrites_one_file(data, tmp_path):
    path = tmp_path / "ckpt.npz"
    ck = ModelCheckpoint(path)
    _trainer().fit(data.x_train, data.y_train, epochs=3, batch_size=32, callbacks=[ck])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left
    assert nnx.checkpoint.load_checkpoint(path)["meta"]["epoch"] == 3


# --- learning rate -------------------------------------------------------------------------


class LrLog(Callback):
    def __init__(self):
        self.lrs = []

    def on_backward_end(self, trainer, state):
        self.lrs.append(trainer.optimizer.lr)


def test_learning_rate_scheduler_sets_the_rate_of_every_step(data):
    sched = nnx.schedules.Warmup(nnx.schedules.Cosine(0.1, total_steps=16), warmup_steps=4)
    log = LrLog()
    tr = _trainer(optimizer=nnx.SGD(0.1))
    h = tr.fit(data.x_train, data.y_train, epochs=4, batch_size=24,
               callbacks=[LearningRateScheduler(sched), log])
    assert tr.step == 16
    assert log.lrs == [sched(s) for s in range(16)]
    assert h["lr"] == [sched(s) for s in (4, 8, 12, 16)]  # the rate for the next step


def test_trainer_schedule_argument_is_applied_before_each_step(data):
    log = LrLog()
    sched = nnx.schedules.StepDecay(0.1, step_size=2, gamma=0.5)
    tr = _trainer(optimizer=nnx.SGD(0.1), schedule=sched, callbacks=[log])
    tr.fit(data.x_train, data.y_train, epochs=2, batch_size=48)
    assert log.lrs == [sched(s) for s in range(tr.step)]


def test_reduce_lr_on_plateau(data):
    log = LrLog()
    rp = ReduceLROnPlateau("val_loss", factor=0.5, patience=2, min_lr=0.02)
    tr = _trainer(optimizer=nnx.SGD(0.1))
    h = tr.fit(data.x_train, data.y_train, epochs=7, batch_size="full", validation_split=0.2,
               callbacks=[Script("val_loss", [1, 1, 1, 1, 1, 1, 1]), rp, log])
    # halved after every 2 epochs without improvement; the rate of each epoch is logged
    assert h["lr"] == log.lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert tr.optimizer.lr == 0.02  # not below min_lr


def test_reduce_lr_on_plateau_with_a_schedule_warns(data):
    with pytest.warns(UserWarning, match="undoes the reduction"):
        _trainer(schedule=nnx.schedules.Constant(0.01)).fit(
            data.x_train, data.y_train, epochs=1, batch_size=32,
            callbacks=[ReduceLROnPlateau("loss")])


# --- progress -------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_one_line_per_epoch_in_a_log(data):
    out = io.StringIO()
    _trainer().fit(data.x_train, data.y_train, epochs=2, batch_size=32, validation_split=0.25,
                   callbacks=[ProgressBar(stream=out)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("epoch 1/2 [") and " 3/3 " in lines[0]
    assert "samples/s" in lines[0] and "val_accuracy" in lines[1]


def test_progress_bar_redraws_in_place_on_a_terminal(data):
    out = Tty()
    _trainer().fit(data.x_train, data.y_train, epochs=2, batch_size=8,
                   callbacks=[ProgressBar(stream=out, every=4)])
    text = out.getvalue()
    assert text.count("\n") == 2 and text.count("\r") == 2 * (1 + 12 // 4)
    assert "4/12" in text and "loss " in text


def test_progress_bar_quiet_and_refresh_by_time(data):
    out = Tty()
    _trainer().fit(data.x_train, data.y_train, epochs=1, batch_size=8,
                   callbacks=[ProgressBar(stream=out, quiet=True)])
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    out = Tty()
    _trainer().fit(data.x_train, data.y_train, epochs=1, batch_size=8,
                   callbacks=[ProgressBar(stream=out, refresh=0.0)])
    assert out.getvalue().count("\r") == 1 + 12  # every step redraws when refresh is 0
    with pytest.raises(ConfigError, match="every"):
        ProgressBar(every=0)


# --- loggers -------------------------------------------------------------------------------


def test_csv_and_json_lines_loggers(data, tmp_path):
    csv_path, jsonl_path = tmp_path / "metrics.csv", tmp_path / "metrics.jsonl"
    tr = _trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=3, batch_size=32, validation_split=0.2,
               callbacks=[CSVLogger(csv_path), JSONLinesLogger(jsonl_path)])
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == h["val_loss"]  # written exactly
    records = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert [r["loss"] for r in records] == h["loss"]
    assert set(records[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr",
                               "time"}
    # a new run starts new files
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=32,
           callbacks=[CSVLogger(csv_path), JSONLinesLogger(jsonl_path)])
    assert len(csv_path.read_text().splitlines()) == 2
    assert len(jsonl_path.read_text().splitlines()) == 1


def test_loggers_append_on_resume_without_repeating_epochs(data, tmp_path):
    csv_path, jsonl_path, ck = (tmp_path / "m.csv", tmp_path / "m.jsonl", tmp_path / "c.npz")

    def loggers(append):
        return [CSVLogger(csv_path, append=append), JSONLinesLogger(jsonl_path, append=append)]

    # the first run checkpoints only at its best epoch (2), then goes on to epoch 4
    _trainer().fit(data.x_train, data.y_train, epochs=4, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_loss", [3, 2, 5, 5]), *loggers(False),
                              ModelCheckpoint(ck, save_best_only=True)])
    assert len(jsonl_path.read_text().splitlines()) == 4
    _trainer().fit(data.x_train, data.y_train, epochs=5, batch_size=32, validation_split=0.2,
                   callbacks=loggers(True), resume=ck)
    assert [int(r["epoch"]) for r in csv.DictReader(csv_path.open())] == [1, 2, 3, 4, 5]
    assert [json.loads(x)["epoch"] for x in jsonl_path.read_text().splitlines()] == [1, 2, 3,
                                                                                      4, 5]


# --- non-finite ---------------------------------------------------------------------------------


def test_terminate_on_nonfinite_selects_the_mode(data):
    tr = _trainer()
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=32,
           callbacks=[TerminateOnNonFinite("skip")])
    assert tr.on_nonfinite == "skip" and tr.history["skipped"] == [0]
    with pytest.raises(ConfigError, match="on_nonfinite"):
        TerminateOnNonFinite("warn")


# --- History and its plot -------------------------------------------------------------------------


def _labels(fig):
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
             sorted(t.get_text() for t in (ax.get_legend().get_texts()
                                           if ax.get_legend() else [])))
            for ax in fig.axes]


def test_history_plot_writes_a_png_with_loss_and_accuracy(data, tmp_path):
    tr = _trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=3, batch_size=32, validation_split=0.2)
    path = tmp_path / "curves.png"
    fig = h.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _labels(fig) == [("loss", "epoch", "loss", ["train", "validation"]),
                            ("accuracy", "epoch", "accuracy", ["train", "validation"])]
    assert list(fig.axes[0].lines[0].get_ydata()) == h["loss"]
    assert list(fig.axes[1].lines[1].get_xdata()) == [1, 2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name != "curves.png"]


def test_history_plot_shows_the_learning_rate_when_it_changed(data):
    tr = _trainer(optimizer=nnx.SGD(0.1), schedule=nnx.schedules.Exponential(0.1, 0.9))
    h = tr.fit(data.x_train, data.y_train, epochs=3, batch_size=32)
    fig = h.plot()
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert fig.axes[2].get_yscale() == "log"


def test_history_plot_for_regression():
    ds = nnx.data.regression(n=100, features=2, seed=0)
    h = Trainer(nnx.mlp([2, 8, 1]), "mse").fit(ds.x_train, ds.y_train, epochs=2, batch_size=16)
    assert [ax.get_ylabel() for ax in h.plot().axes] == ["loss", "mae"]


def test_history_access():
    h = History()
    h.append(0, {"loss": 2.0, "val_loss": 3.0, "lr": 0.1})
    h.append(1, {"loss": 1.0, "val_loss": 2.5, "lr": 0.1})
    assert len(h) == 2 and h["loss"] == [2.0, 1.0] and "val_loss" in h
    assert h.best_epoch() == 2 and h.to_dict()["epoch"] == [1, 2]
    assert History(h.to_dict()).history == h.history


def test_every_callback_is_importable_from_nnx_callbacks():
    from nnx.train import hooks, loggers

    for name in nnx.callbacks.__all__:
        assert getattr(nnx.callbacks, name) is getattr(nnx.train, name), name
    assert nnx.callbacks.Callback is hooks.Callback and nnx.callbacks.StepState is hooks.StepState
    assert {nnx.callbacks.ProgressBar, nnx.callbacks.CSVLogger,
            nnx.callbacks.JSONLinesLogger} == {loggers.ProgressBar, loggers.CSVLogger,
                                               loggers.JSONLinesLogger}
    assert nnx.doctor.Doctor.__mro__[1] is Callback
