"""What limits a run that does not fail: too few steps, a schedule that stopped it, a penalty.

- ``under-training``: the loss is still falling when the run ends, far from done.
- ``lr-schedule-collapse``: the schedule drove the learning rate to about zero early.
- ``over-regularised``: an L2 or weight-decay penalty pins the weights near zero.

They read the loss curve, the sampled learning rate and weight norms, and the
run's facts in ``trace.meta`` (``l2``, ``weight_decay``, ``schedule``,
``majority_share``, the last epoch's ``accuracy``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace
from .common import loss_summary, lr_of, smoothed_loss, weights

__all__ = ["detect_under_training", "detect_schedule_collapse", "detect_over_regularised",
           "accuracy_gain"]


def accuracy_gain(trace: Trace) -> float | None:
    """How far the last training accuracy went from the majority share towards 100% (0..1)."""
    share = trace.meta.get("majority_share")
    acc = trace.epochs[-1].get("accuracy") if trace.epochs else None
    if share is None or acc is None or share >= 1:
        return None
    return (acc - share) / (1 - share)


def _far_from_done(trace: Trace, summary: dict) -> bool:
    gain = accuracy_gain(trace)
    return summary["progress"] < T.UNDERTRAINED_PROGRESS and (
        gain is None or gain < T.UNDERTRAINED_PROGRESS)


def _still_falling(trace: Trace):
    """``(fall over the last quarter, fraction of down moves)`` of the smoothed loss."""
    _, s = smoothed_loss(trace)
    if s.size < 8:
        return 0.0, 0.0
    tail = s[-max(2, s.size // 4):]
    fall = (tail[0] - tail[-1]) / max(abs(tail[0]), 1e-12)
    down = float(np.mean(np.diff(tail) < 0))
    return float(fall), down


def detect_under_training(trace: Trace) -> list[Finding]:
    """Still falling at the end and far from done: too low a learning rate or too few steps."""
    summary = loss_summary(trace)
    fall, down = _still_falling(trace)
    if fall < T.UNDERTRAINED_FALL or down < T.UNDERTRAINED_DOWN_MOVES:
        return []
    if not _far_from_done(trace, summary):
        return []
    lr, epochs = lr_of(trace), trace.meta.get("epochs")
    gain = accuracy_gain(trace)
    acc = "" if gain is None else (
        f", training accuracy {100 * trace.epochs[-1]['accuracy']:.1f}% against "
        f"{100 * trace.meta['majority_share']:.1f}% for always answering the largest class")
    more = f" or train longer (--epochs {4 * epochs})" if epochs else " or train longer"
    return [Finding(
        "under-training", "warning",
        f"the loss was still falling when training stopped ({100 * fall:.1f}% over the last "
        f"quarter of the {trace.n_steps} steps) and is still {summary['final']:.4g}, "
        f"{100 * summary['progress']:.0f}% of the way down from an uninformed model{acc}",
        "Nothing is broken, but the run ended long before the model learned the task: the "
        "learning rate is too low for this number of steps, or there are too few steps.",
        (f"Raise the learning rate (--lr {lr * 10:.3g})" if lr else "Raise the learning rate")
        + more + ".",
        steps=[int(trace.loss_steps[-1])] if trace.n_steps else [],
        evidence={"fall_last_quarter": fall, "down_moves": down,
                  "loss_progress": summary["progress"], "accuracy_gain": gain, "lr": lr},
        action={"lr": float(f"{lr * 10:.3g}")} if lr else {})]


def detect_schedule_collapse(trace: Trace) -> list[Finding]:
    """The sampled learning rate fell below ``SCHEDULE_COLLAPSE`` of its peak early on."""
    lr = trace.lr
    ok = np.isfinite(lr)
    if lr.size < 4 or not ok.any() or trace.n_steps == 0:
        return []
    peak = float(np.max(lr[ok]))
    low = np.nonzero(ok & (lr < T.SCHEDULE_COLLAPSE * peak))[0]
    if peak <= 0 or low.size == 0:
        return []
    first_step = int(trace.sample_steps[low[0]])
    at = (first_step - int(trace.loss_steps[0])) / max(1, trace.n_steps)
    if at >= T.SCHEDULE_COLLAPSE_BEFORE or loss_summary(trace)["progress"] >= T.UNIT_PROGRESS:
        return []
    schedule = trace.meta.get("schedule") or "the learning-rate schedule"
    per_epoch = trace.meta.get("steps_per_epoch")
    return [Finding(
        "lr-schedule-collapse", "warning",
        f"{schedule} drove the learning rate from {peak:.3g} to {float(lr[low[0]]):.2g} by step "
        f"{first_step}, {100 * at:.0f}% into training; the remaining steps barely moved the "
        "weights",
        "A decay applied every step decays per-epoch rates hundreds of times too fast: "
        "with gamma 0.95 per step the rate is a millionth of its start after 270 steps.",
        "Decay per epoch, not per step (in Python, LearningRateScheduler(lambda step: "
        f"schedule(step // {per_epoch or 'steps_per_epoch'}))), use a schedule over the whole "
        "run (--schedule cosine), or keep the rate constant (--schedule constant).",
        steps=[first_step],
        evidence={"peak_lr": peak, "lr_at_collapse": float(lr[low[0]]),
                  "collapsed_at_fraction": at, "schedule": schedule},
        action={"schedule": "per-epoch"})]


def _penalty(trace: Trace):
    """``(name, value)`` of the run's weight penalty, or ``(None, 0)``."""
    meta = trace.meta
    for name in ("weight_decay", "l2"):
        value = meta.get(name) or 0.0
        if value > 0:
            return name, float(value)
    return None, 0.0


def detect_over_regularised(trace: Trace) -> list[Finding]:
    """A penalty that shrank every weight matrix while the loss stayed high."""
    name, value = _penalty(trace)
    ws = weights(trace)
    if name is None or not ws or trace.sample_steps.size < 4:
        return []
    shrink = {}
    for layer, j in ws:
        w = trace.weight_norm[:, j]
        first, last = w[0], w[-1]
        shrink[layer] = float(last / first) if first > 0 and math.isfinite(last) else math.nan
    if not all(v < T.OVERREG_SHRINK for v in shrink.values()):
        return []
    summary = loss_summary(trace)
    if not _far_from_done(trace, summary):
        return []
    flag = "--weight-decay" if name == "weight_decay" else "--l2"
    smaller = float(f"{value * T.OVERREG_FACTOR:.3g}")
    return [Finding(
        "over-regularised", "warning",
        f"the {name.replace('_', ' ')} penalty {value:g} pins the weights: every weight "
        f"matrix shrank to {100 * max(shrink.values()):.2g}% or less of its initial norm "
        f"while the loss stayed at {summary['final']:.4g}",
        "The penalty pulls every weight towards zero harder than the loss gradient pushes "
        "it away, so the weights settle near zero and the model stays close to a constant. "
        "A smaller or larger learning rate does not change that balance.",
        f"Use a much smaller penalty ({flag} {smaller:g}), or none.",
        layers=list(shrink), steps=[int(trace.sample_steps[-1])],
        evidence={"penalty": name, "value": value, "weight_norm_ratio": shrink,
                  "loss_progress": summary["progress"]},
        action={name: smaller})]
