"""The learning-rate detector: too high or too low, from update ratios *and* the loss curve.

It runs after the other detectors and reads their findings: a learning rate is
only blamed together with a symptom it explains, and not when another cause
(initialisation, input scaling, zero gradients) explains the symptom first.
"""

from __future__ import annotations

import math

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace
from .common import (
    early_update_ratio,
    loss_summary,
    lr_action,
    lr_flag,
    lr_of,
    median,
    update_ratio,
    weights,
)

__all__ = ["detect_learning_rate", "median_update_ratio"]

#: findings that show the loss is unstable
_UNSTABLE = {"non-finite", "loss-spikes", "loss-oscillation", "exploding-gradients"}
#: causes that make every learning rate look too high: the gradients themselves are huge
_INIT_CAUSES = {"initial-loss-off", "unscaled-inputs", "symmetric-units"}
#: causes that make updates small whatever the learning rate
_BLOCKED = {"zero-gradients", "stalled-weights", "tiny-gradients", "symmetric-units",
            "vanishing-gradients", "vanishing-activations", "lr-schedule-collapse",
            "over-regularised"}
#: what huge first updates leave behind
_KILLED = {"dead-relu", "zero-gradients", "stalled-weights"}
#: causes of large relative updates that a lower learning rate does not fix
_NOT_THE_RATE = {"over-regularised"}


def median_update_ratio(trace: Trace):
    """``(median over layers of the median update/weight ratio, {layer: ratio})``."""
    ws = weights(trace)
    if not ws or trace.sample_steps.size == 0:
        return None, {}
    ratios = {layer: median(update_ratio(trace, j)) for layer, j in ws}
    vals = [v for v in ratios.values() if math.isfinite(v) and v > 0]
    return (float(np.median(vals)) if vals else None), ratios


def _diverged(trace: Trace, summary: dict) -> bool:
    """The loss ended ``DIVERGENCE_FACTOR`` times above its best.

    With minibatches and three epochs or more the epoch losses are compared (a mean
    over the whole epoch, where a few hard batches cannot move the minimum);
    otherwise the smoothed step losses.
    """
    best, final, initial = summary["best"], summary["final"], summary["initial"]
    epochs = [e["loss"] for e in trace.epochs if math.isfinite(e.get("loss", math.nan))]
    if not trace.meta.get("full_batch") and len(epochs) >= 3:
        best, final = min(epochs), epochs[-1]
    return (math.isfinite(best) and best > 0 and final > T.DIVERGENCE_FACTOR * best
            and final > best + 0.05 * initial)


def _init_issue(found: list[Finding], ids: set) -> set:
    """The initialisation/scaling findings that come before a learning-rate change."""
    issue = ids & _INIT_CAUSES
    if any(f.id == "exploding-gradients" and "output layer to the input" in f.title
           for f in found):
        issue |= {"exploding-gradients"}
    return issue


def _big_updates_explain(ids: set, summary: dict, ratio) -> bool:
    """Large updates together with a symptom they explain (instability, saturation, no
    progress)."""
    if ratio is None or ratio <= T.LR_HIGH_UPDATE_RATIO:
        return False
    return bool(ids & _UNSTABLE) or summary["progress"] < 0.5 or "saturated-units" in ids


def _blown_early(trace: Trace, ids: set) -> float | None:
    """The early update/weight ratio when the first updates were huge and the units or the
    gradients died after them (the median over the run then reads small: dead weights
    do not move)."""
    early = early_update_ratio(trace)
    if early is None or early <= T.LR_BLOWN_UPDATE_RATIO or not ids & _KILLED:
        return None
    return early


def _reasons_too_high(summary, ratio, ids, diverged, blown) -> list[str]:
    why = []
    if blown:
        why.append(f"the first updates were {blown:.2g} of the weights per step, then "
                   + " and ".join(sorted(ids & _KILLED)))
    if "non-finite" in ids:
        why.append("the loss became non-finite")
    if diverged:
        why.append(f"the loss rose from its best {summary['best']:.4g} to "
                   f"{summary['final']:.4g}")
    if ratio is not None and ratio > T.LR_HIGH_UPDATE_RATIO:
        why.append(f"updates are {ratio:.2g} of the weights per step "
                   f"(healthy is about {T.HEALTHY_UPDATE_RATIO:g})")
    if ids & _UNSTABLE and "non-finite" not in ids:
        why.append("the loss is unstable")
    return why


def _too_high(trace, found, ids, summary, ratio, per_layer, evidence) -> list[Finding]:
    if ids & _NOT_THE_RATE and "non-finite" not in ids:
        return []
    diverged = _diverged(trace, summary)
    blown = _blown_early(trace, ids)
    # a run that blew up says little about the rate that works: aim for healthy updates
    far = "non-finite" in ids or diverged or blown is not None
    if not (far or _big_updates_explain(ids, summary, ratio)):
        return []
    why = _reasons_too_high(summary, ratio, ids, diverged, blown)
    # with a broken initialisation or unscaled inputs every learning rate looks too
    # high: the gradients themselves are huge; that cause comes first
    init_issue = _init_issue(found, ids)
    if init_issue:
        why.append("but fix the initialisation/input scaling first: "
                   + ", ".join(sorted(init_issue)))
    lr = lr_of(trace)
    return [Finding(
        "lr-too-high", "info" if init_issue else ("error" if far else "warning"),
        "learning rate too high" + (f" (lr {lr:g})" if lr else "") + ": " + "; ".join(why),
        "Each step overshoots the minimum: the loss jumps, oscillates or diverges, and "
        "sigmoid/tanh units are pushed into saturation.",
        f"Lower the learning rate ({lr_flag(trace, 0.1, healthy=far)}), or find one with "
        "the range test: --lr-find (nnx.doctor.lr_find(model, loss, x, y)).",
        layers=[k for k, v in per_layer.items() if v > T.LR_HIGH_UPDATE_RATIO],
        steps=[int(trace.sample_steps[0])] if trace.sample_steps.size else [],
        evidence=evidence, action=lr_action(trace, 0.1, healthy=far))]


def _too_low(trace, ids, summary, ratio, per_layer, evidence) -> list[Finding]:
    small = ratio is not None and ratio < T.LR_LOW_UPDATE_RATIO
    if not small or summary["fall"] >= T.LOW_PROGRESS or ids & _BLOCKED:
        return []
    lr = lr_of(trace)
    return [Finding(
        "lr-too-low", "warning",
        "learning rate too low" + (f" (lr {lr:g})" if lr else "")
        + f": updates are {ratio:.2g} of the weights per step and the loss "
        + (f"fell only {100 * summary['fall']:.1f}%" if summary["fall"] > 0
           else "did not fall"),
        "The steps are so small that training would need hundreds of times more of them.",
        f"Raise the learning rate ({lr_flag(trace, 10, healthy=True)}: updates of about "
        f"{T.HEALTHY_UPDATE_RATIO:g} of the weights), or find one with the range test: "
        "--lr-find.",
        layers=list(per_layer), steps=[int(trace.sample_steps[0])], evidence=evidence,
        action=lr_action(trace, 10, healthy=True))]


def detect_learning_rate(trace: Trace, found: list[Finding]) -> list[Finding]:
    """Learning rate too high or too low; ``found`` are the findings of the other detectors."""
    ratio, per_layer = median_update_ratio(trace)
    summary = loss_summary(trace)
    ids = {f.id for f in found if f.severity != "info"}  # notes are not symptoms
    evidence = {"lr": lr_of(trace), "median_update_ratio": ratio, "update_ratios": per_layer,
                "healthy_update_ratio": T.HEALTHY_UPDATE_RATIO,
                "loss_initial": summary["initial"], "loss_best": summary["best"],
                "loss_final": summary["final"]}
    return (_too_high(trace, found, ids, summary, ratio, per_layer, evidence)
            or _too_low(trace, ids, summary, ratio, per_layer, evidence))
