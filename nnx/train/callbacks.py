"""Callbacks: everything around the training step that is not the step itself.

The contract (:class:`Callback`, :class:`StepState`) is in :mod:`nnx.train.hooks`,
the reporting callbacks (progress bar, metrics files) in :mod:`nnx.train.loggers`;
both are importable from here. This module holds the ones that steer training:
early stopping, checkpoints, learning-rate schedules and the non-finite mode.
"""

from __future__ import annotations

import math
import os
import warnings

from ..arguments import whole_number
from ..errors import ConfigError
from .hooks import Callback, StepState
from .loggers import CSVLogger, JSONLinesLogger, ProgressBar
from .nonfinite import check_mode

__all__ = ["StepState", "Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "ReduceLROnPlateau", "ProgressBar", "CSVLogger", "JSONLinesLogger",
           "TerminateOnNonFinite"]


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


def _monitored(cb, logs: dict):
    """``logs[cb.monitor]``; with no validation data ``val_x`` falls back to ``x`` (warned)."""
    value = logs.get(cb.monitor)
    if value is None and cb.monitor.startswith("val_"):
        value = logs.get(cb.monitor[4:])
        if value is not None and not getattr(cb, "_warned", False):
            cb._warned = True
            warnings.warn(f"{type(cb).__name__} monitors {cb.monitor!r} but there is no "
                          f"validation data; watching the training {cb.monitor[4:]!r} instead",
                          stacklevel=4)
    if value is None:
        raise ConfigError(f"{type(cb).__name__} monitors {cb.monitor!r}, which is not logged; "
                          f"logged metrics are: {', '.join(sorted(logs))}")
    return value


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends with the weights of its best
    epoch when training stops early. ``mode`` is ``"min"``, ``"max"`` or
    ``"auto"`` (max for accuracies). Without validation data ``val_loss`` falls
    back to the training ``loss``, with a warning. Non-finite values never count
    as an improvement.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        patience = whole_number(patience, "early stopping patience")
        if not min_delta >= 0:
            raise ConfigError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.mode = _mode_for(monitor, mode)
        self.restore = restore_best_weights
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_weights, self.stopped_epoch = None, 0, None, None

    def on_train_begin(self, trainer):
        if not getattr(self, "_resumed", False):
            self._reset()
        self._resumed = False

    def on_epoch_end(self, trainer, epoch, logs):
        value = _monitored(self, logs)
        if math.isfinite(value) and _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore:
                self.best_weights = trainer.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            self.stopped_epoch = epoch

    def on_train_end(self, trainer):
        if self.restore and self.best_weights is not None and self.stopped_epoch is not None:
            trainer.model.set_weights(self.best_weights)

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "arrays": dict(self.best_weights or {})}

    def load_state_dict(self, state):
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]
        self.wait = int(state["wait"])
        self.best_weights = dict(state.get("arrays") or {}) or None
        self._resumed = True


class ModelCheckpoint(Callback):
    """Write a resumable checkpoint (:func:`nnx.checkpoint.save_checkpoint`) after epochs.

    ``path`` may hold ``{epoch}`` and metric names (``"ckpt-{epoch:03d}.npz"``).
    ``save_best_only`` writes only when ``monitor`` improves. A model with a
    NaN or infinite parameter is never written (a warning says so), so a good
    checkpoint is never replaced by a broken one. Writes are atomic. Runs after
    every other callback's ``on_epoch_end``, so it holds their state for the
    epoch. ``last_saved`` is ``(path, epoch)`` of the last file written.
    """

    epoch_end_last = True
    #: with several ranks, only rank 0 runs it (it writes files)
    rank0_only = True

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto") -> None:
        self.path, self.monitor, self.save_best_only = os.fspath(path), monitor, save_best_only
        self.mode = _mode_for(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.last_saved: tuple[str, int] | None = None

    def on_epoch_end(self, trainer, epoch, logs):
        from ..checkpoint import NonFiniteWeights, save_checkpoint

        if self.save_best_only:
            value = _monitored(self, logs)
            if not math.isfinite(value) or not _better(self.mode, value, self.best, 0.0):
                return
        path = self.path.format(epoch=epoch + 1, **logs) if "{" in self.path else self.path
        previous = self.best, self.last_saved
        # the checkpoint holds this callback's state: update it before writing
        self.last_saved = (path, epoch + 1)
        if self.save_best_only:
            self.best = value
        try:
            save_checkpoint(path, trainer, epoch=epoch + 1)
        except NonFiniteWeights as exc:
            self.best, self.last_saved = previous
            kept = (f"{self.last_saved[0]} (epoch {self.last_saved[1]}) is kept"
                    if self.last_saved else "nothing was written")
            warnings.warn(f"not saving epoch {epoch + 1}: {exc}; {kept}", stacklevel=2)
        except BaseException:
            self.best, self.last_saved = previous
            raise

    def state_dict(self):
        return {"best": self.best, "last_saved": self.last_saved}

    def load_state_dict(self, state):
        self.best = float(state["best"])
        last = state.get("last_saved")
        self.last_saved = (last[0], int(last[1])) if last else None


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr = schedule(step)`` before every step (host arithmetic only).

    ``schedule`` is a :mod:`nnx.schedules` object or any callable taking the
    global step (counted from 0) and returning a learning rate.
    """

    def __init__(self, schedule) -> None:
        if not callable(schedule):
            raise ConfigError(f"schedule must be callable as schedule(step) -> lr, got "
                              f"{schedule!r}")
        self.schedule = schedule

    def on_train_begin(self, trainer):
        trainer.optimizer.lr = float(self.schedule(trainer.step))

    def on_step_end(self, trainer, state):
        trainer.optimizer.lr = float(self.schedule(state.step + 1))


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    Do not combine with a per-step schedule: the schedule would overwrite the
    reduced rate at the next step (a warning says so).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.5, patience: int = 3,
                 min_lr: float = 1e-6, min_delta: float = 1e-4, mode: str = "auto") -> None:
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor}")
        patience = whole_number(patience, "ReduceLROnPlateau patience")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.min_lr, self.min_delta = min_lr, min_delta
        self.mode = _mode_for(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def on_train_begin(self, trainer):
        scheduled = trainer.schedule is not None or any(
            isinstance(cb, LearningRateScheduler) for cb in trainer.active_callbacks)
        if scheduled:
            warnings.warn("ReduceLROnPlateau is used with a learning-rate schedule, which "
                          "sets the rate every step and undoes the reduction; use one of them",
                          stacklevel=2)

    def on_epoch_end(self, trainer, epoch, logs):
        value = _monitored(self, logs)
        if not math.isfinite(value):
            return
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.optimizer.lr = max(trainer.optimizer.lr * self.factor, self.min_lr)
            self.wait = 0

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])


class TerminateOnNonFinite(Callback):
    """Select what happens when the loss becomes NaN or infinite (``"raise"`` by default).

    The check itself is built into the trainer (it must come before any
    checkpoint is written, and it runs at logging points only): ``"raise"``
    stops with a :class:`~nnx.errors.NonFiniteError` naming the first step and
    layer where a NaN or infinity appeared and the likely cause; ``"skip"``
    skips non-finite steps on the device (see ``Trainer(on_nonfinite=...)``).
    """

    def __init__(self, mode: str = "raise") -> None:
        self.mode = check_mode(mode)

    def on_train_begin(self, trainer):
        trainer.on_nonfinite = self.mode
