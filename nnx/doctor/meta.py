"""The facts about a run that the detectors need besides the monitored statistics.

:func:`run_meta` reads them once, at the start of training, from the trainer,
its optimizer and callbacks, the loss and the training targets (host copies).
They end up in ``Trace.meta`` and in the ``run`` table of the report.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["run_meta", "schedule_of", "early_stopping_of"]


def schedule_of(trainer):
    """The learning-rate schedule of ``trainer`` (its own, or a LearningRateScheduler's)."""
    if getattr(trainer, "schedule", None) is not None:
        return trainer.schedule
    for cb in getattr(trainer, "active_callbacks", ()):
        if type(cb).__name__ == "LearningRateScheduler":
            return cb.schedule
    return None


def early_stopping_of(trainer):
    for cb in getattr(trainer, "active_callbacks", ()):
        if type(cb).__name__ == "EarlyStopping":
            return cb
    return None


def _describe(schedule) -> str | None:
    if schedule is None:
        return None
    describe = getattr(schedule, "describe", None)
    if callable(describe):
        return f"the schedule ({describe()})"
    return f"the schedule {getattr(schedule, '__name__', type(schedule).__name__)}"


def _optimizer_meta(trainer) -> dict:
    opt = trainer.optimizer
    return {"optimizer": type(opt).__name__, "lr": float(opt.lr),
            "l2": float(getattr(opt, "l2", 0.0) or 0.0),
            "weight_decay": float(getattr(opt, "weight_decay", 0.0) or 0.0),
            "clip_norm": getattr(opt, "clip_norm", None),
            "schedule": _describe(schedule_of(trainer))}


def _labels(yh) -> np.ndarray | None:
    """Class indices of classification targets: labels, one column of 0/1, or one-hot."""
    if yh.ndim == 1:
        return np.asarray(yh, dtype=np.int64).clip(0)
    if yh.ndim == 2 and yh.shape[1] == 1:
        return (np.asarray(yh).reshape(-1) > 0.5).astype(np.int64)
    if yh.ndim == 2:
        return np.argmax(yh, axis=1)
    return None


def _classes(loss, model, yh) -> dict:
    """Number of classes and the majority share (classification)."""
    out = {}
    n_classes = model.n_out if loss.task == "classification" else None
    if loss.name == "sigmoid_binary_cross_entropy":
        n_classes = 2
    labels = _labels(yh) if yh is not None and loss.task == "classification" else None
    if labels is not None and labels.size:
        counts = np.bincount(labels)
        out["majority_share"] = float(counts.max() / counts.sum())
        if loss.name == "softmax_cross_entropy":
            n_classes = max(n_classes or 0, int(counts.size))
    out["n_classes"] = n_classes
    expected = loss.expected_initial(n_classes) if n_classes else None
    out["expected_initial_loss"] = expected if expected is None or math.isfinite(expected) \
        else None
    return out


def _targets(loss, yh) -> dict:
    """Scale of the regression targets: what predicting their mean would score."""
    if loss.task != "regression" or yh is None or yh.size == 0:
        return {}
    y = np.asarray(yh, dtype=np.float64).reshape(yh.shape[0], -1)
    return {"target_sq_mean": float(np.mean(y ** 2)),
            "target_var": float(np.mean(np.var(y, axis=0))),
            "target_std": float(np.sqrt(np.mean(np.var(y, axis=0)))),
            "target_mean_abs": float(np.mean(np.abs(np.mean(y, axis=0))))}


def run_meta(trainer, loss, model, yh) -> dict:
    """Facts about the run: loss, task, optimizer and penalties, schedule, sizes, classes,
    the scale of the targets. ``yh`` is a host copy of the training targets (or None)."""
    meta = {"loss": loss.name, "task": loss.task}
    meta.update(_optimizer_meta(trainer))
    meta.update({
        "device": model.backend.label, "n_outputs": model.n_out,
        "layers": [la.name for la in model.layers], "n_train": int(trainer.n_train),
        "batch_size": int(trainer.batch_size), "steps_per_epoch": int(trainer.steps_per_epoch),
        "epochs": int(getattr(trainer, "epochs", 0) or 0),
        "full_batch": trainer.batch_size >= trainer.n_train})
    meta.update(_classes(loss, model, yh))
    meta.update(_targets(loss, yh))
    return meta
