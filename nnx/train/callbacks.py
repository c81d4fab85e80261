"""Callbacks: everything around the training step that is not the step itself.

A callback overrides any of the hooks below; each receives the
:class:`~nnx.train.Trainer`. ``state`` is a :class:`StepState` (device arrays:
do not read them every step — that would wait for the device each time).
``logs`` holds host floats, read once per epoch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["StepState", "Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "ReduceLROnPlateau", "ProgressBar", "CSVLogger", "JSONLinesLogger",
           "TerminateOnNonFinite"]


@dataclass
class StepState:
    """One training step, as callbacks see it.

    ``x`` ``(batch, n_in)`` and ``y`` are the device batch, ``output`` the
    logits ``(batch, n_out)``, ``loss`` the 0-d batch-mean loss on the device.
    """

    step: int
    epoch: int
    batch: int
    x: Any
    y: Any
    output: Any
    loss: Any


class Callback:
    """Base class: every hook is a no-op."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_backward_end(self, trainer, state: StepState) -> None: ...
    def on_step_end(self, trainer, state: StepState) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends with the weights of its best epoch.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        if patience < 1:
            raise ConfigError(f"early stopping patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = _mode_for(monitor, mode)
        self.restore = restore_best_weights
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_weights, self.stopped_epoch = None, 0, None, None

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None and self.monitor.startswith("val_"):
            value = logs.get(self.monitor[4:])  # no validation set: watch the training metric
        if value is None or not math.isfinite(value):
            return
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore:
                self.best_weights = trainer.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                self.stopped_epoch = epoch

    def on_train_end(self, trainer):
        if self.restore and self.best_weights is not None and self.stopped_epoch is not None:
            trainer.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Write a resumable checkpoint at the end of each epoch (atomically).

    ``save_best_only`` writes only when ``monitor`` improves. A model with a
    non-finite parameter is never written, so a good checkpoint is never lost.
    """

    def __init__(self, path: str, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto") -> None:
        self.path, self.monitor, self.save_best_only = os.fspath(path), monitor, save_best_only
        self.mode = _mode_for(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved_epochs: list[int] = []

    def on_epoch_end(self, trainer, epoch, logs):
        from ..checkpoint import model_is_finite, save_checkpoint

        if self.save_best_only:
            value = logs.get(self.monitor, logs.get(self.monitor.removeprefix("val_")))
            if value is None or not math.isfinite(value) or not _better(
                    self.mode, value, self.best, 0.0):
                return
            self.best = value
        if not model_is_finite(trainer.model):
            return
        save_checkpoint(self.path, trainer, epoch=epoch + 1)
        self.saved_epochs.append(epoch)


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr = schedule(step)`` before every step (host arithmetic only)."""

    def __init__(self, schedule) -> None:
        self.schedule = schedule

    def on_train_begin(self, trainer):
        trainer.optimizer.lr = float(self.schedule(trainer.step))

    def on_step_end(self, trainer, state):
        trainer.optimizer.lr = float(self.schedule(state.step + 1))


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.5, patience: int = 3,
                 min_lr: float = 1e-6, min_delta: float = 1e-4, mode: str = "auto") -> None:
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor}")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.min_lr, self.min_delta = min_lr, min_delta
        self.mode = _mode_for(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor, logs.get(self.monitor.removeprefix("val_")))
        if value is None or not math.isfinite(value):
            return
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.optimizer.lr = max(trainer.optimizer.lr * self.factor, self.min_lr)
            self.wait = 0


class ProgressBar(Callback):
    """One line per epoch on stderr: steps, samples/s and the running loss.

    The running loss is read from the device only when the line is redrawn
    (every ``refresh`` seconds of wall-clock time), never per step.
    """

    def __init__(self, refresh: float = 0.5, stream=None, width: int = 24) -> None:
        self.refresh, self.stream, self.width = refresh, stream or sys.stderr, width
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_epoch_begin(self, trainer, epoch):
        self.t0 = self.last = time.perf_counter()
        self.epoch = epoch

    def on_step_end(self, trainer, state):
        now = time.perf_counter()
        if self.interactive and now - self.last >= self.refresh:
            self.last = now
            self._draw(trainer, state.batch + 1, now, trainer.running_loss(), end="\r")

    def on_epoch_end(self, trainer, epoch, logs):
        steps = trainer.steps_per_epoch
        text = "  ".join(f"{k} {v:.4f}" for k, v in logs.items()
                         if k not in ("lr", "time", "epoch") and isinstance(v, float))
        self._draw(trainer, steps, time.perf_counter(), None, end="\n", text=text)

    def _draw(self, trainer, done, now, loss, end, text=None):
        steps = trainer.steps_per_epoch
        filled = int(self.width * done / max(steps, 1))
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        seen = min(done * trainer.batch_size, trainer.n_train)
        rate = seen / max(now - self.t0, 1e-9)
        tail = text if text is not None else f"loss {loss:.4f}"
        line = (f"epoch {self.epoch + 1}/{trainer.epochs} [{bar[:self.width]}] "
                f"{done}/{steps}  {rate:,.0f} samples/s  {tail}")
        self.stream.write(("\r" if self.interactive else "") + line + end)
        self.stream.flush()


class _FileLogger(Callback):
    def __init__(self, path: str, append: bool = False) -> None:
        self.path, self.append = os.fspath(path), append

    def on_train_begin(self, trainer):
        if not self.append and os.path.exists(self.path):
            os.remove(self.path)

    def _write(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


class CSVLogger(_FileLogger):
    """Append one row of epoch metrics per epoch to a CSV file (header on first write)."""

    def on_epoch_end(self, trainer, epoch, logs):
        row = {"epoch": epoch + 1, **logs}
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        head = ",".join(row) + "\n" if new else ""
        self._write(head + ",".join(_fmt(v) for v in row.values()) + "\n")


class JSONLinesLogger(_FileLogger):
    """Append one JSON object of epoch metrics per epoch."""

    def on_epoch_end(self, trainer, epoch, logs):
        self._write(json.dumps({"epoch": epoch + 1, **logs}) + "\n")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class TerminateOnNonFinite(Callback):
    """Marker: the trainer checks for NaN/inf at every logging point.

    The check itself lives in the trainer (it must run before any checkpoint is
    written); this callback only selects the behaviour: ``"raise"`` stops with
    a :class:`~nnx.errors.NonFiniteError` naming the step and layer, ``"skip"``
    skips non-finite steps on the device.
    """

    def __init__(self, mode: str = "raise") -> None:
        if mode not in ("raise", "skip"):
            raise ConfigError(f"on_nonfinite must be 'raise' or 'skip', got {mode!r}")
        self.mode = mode

    def on_train_begin(self, trainer):
        trainer.on_nonfinite = self.mode
