"""Gradient detectors: non-finite values, exploding, vanishing, tiny and zero gradients,
and weights that stopped changing.

Each ``detect_*`` takes a :class:`~nnx.doctor.trace.Trace` and returns a list
of :class:`~nnx.doctor.findings.Finding`; thresholds are the constants of
:mod:`nnx.doctor.findings`.
"""

from __future__ import annotations

import math

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace
from .common import (
    late,
    loss_summary,
    lr_action,
    lr_flag,
    lr_of,
    median,
    relative,
    update_ratio,
    weights,
)

__all__ = ["detect_non_finite", "detect_exploding", "detect_vanishing", "detect_tiny",
           "detect_zero_and_stalled", "depth_ratio"]


# --- non-finite -------------------------------------------------------------------

def _first_bad_sample(trace: Trace):
    """``(step, layer, what)`` of the first sampled step holding a NaN/inf, or Nones.

    The layer blamed is the first one (in forward order) whose activations were
    non-finite; else the first non-finite weights; else the last non-finite
    gradient in forward order (non-finite gradients flow from the output back).
    """
    # the means (columns 0 and 2); the stds come from sums of squares, which overflow
    # float32 long before the values themselves do
    act_bad = ~np.isfinite(trace.act[:, :, [0, 2]]).all(axis=2) if trace.act.size else None
    grad_bad = ~np.isfinite(trace.grad_norm)
    weight_bad = ~np.isfinite(trace.weight_norm)
    for s in range(trace.sample_steps.size):
        step = int(trace.sample_steps[s])
        if act_bad is not None and act_bad[s].any():
            unit = trace.layers[int(np.argmax(act_bad[s]))]
            return step, unit.owner, f"the output of {unit.label}"
        if weight_bad[s].any():
            layer = trace.params[int(np.argmax(weight_bad[s]))][0]
            return step, layer, f"the weights of {layer}"
        if grad_bad[s].any():
            layer = trace.params[int(np.nonzero(grad_bad[s])[0][-1])][0]
            return step, layer, f"the gradient of {layer}"
    return None, None, None


def detect_non_finite(trace: Trace) -> list[Finding]:
    """NaN/inf in the loss (exact step), activations, gradients or weights (sampled steps).

    When the first sampled non-finite value comes after the first non-finite loss
    (the overflow happened between samples), the layer blamed is the one whose
    pre-activations or gradients grew the most before it.
    """
    loss_bad = ~np.isfinite(trace.loss)
    first_loss = int(trace.loss_steps[np.argmax(loss_bad)]) if loss_bad.any() else None
    first_sample, culprit, what = _first_bad_sample(trace)
    if first_loss is None and first_sample is None:
        return []
    steps = [s for s in (first_loss, first_sample) if s is not None]
    first = min(steps)
    evidence = {"first_nonfinite_loss_step": first_loss,
                "first_nonfinite_sample_step": first_sample, "lr": lr_of(trace)}
    if first_sample is not None and (first_loss is None or first_sample <= first_loss):
        where = f"; first non-finite value in {what} at step {first_sample}"
    else:
        culprit, growth = _fastest_growth(trace, first)
        where = (f"; before it, values grew fastest in {culprit} ({growth:.3g}x)"
                 if culprit else "; sample every step (every=1) to see the layer")
        evidence["growth_before_overflow"] = growth
    at_loss = f" (loss at step {first_loss})" if first_loss is not None else ""
    return [Finding(
        "non-finite", "error", f"non-finite values from step {first}{at_loss}{where}",
        "A value overflowed float32 (above 3.4e38) or became NaN, usually because the "
        "learning rate is too high or gradients exploded; once NaN, every later step is NaN.",
        f"Lower the learning rate ({lr_flag(trace, 0.1, healthy=True)}), clip gradients "
        "(--clip-norm 1.0, or clip_norm=1.0 in the optimizer), or run the learning-rate range "
        "test (--lr-find).",
        layers=[culprit] if culprit else [], steps=sorted(set(steps)), evidence=evidence,
        action=lr_action(trace, 0.1, healthy=True))]


def _fastest_growth(trace: Trace, before: int):
    """The layer whose pre-activation std or weight gradient grew most before ``before``."""
    keep = np.nonzero(trace.sample_steps < before)[0]
    if keep.size < 2:
        return None, math.nan
    a, b = keep[0], keep[-1]
    series = [(unit.owner, trace.act[:, li, 1]) for li, unit in enumerate(trace.layers)]
    series += [(layer, trace.grad_norm[:, j]) for j, (layer, _) in enumerate(trace.params)]
    best, growth = None, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, values in series:
            g = values[b] / values[a]
            if np.isfinite(g) and g > growth:
                best, growth = name, float(g)
    return best, growth


# --- exploding and vanishing ----------------------------------------------------------

def _growth_hits(trace: Trace) -> list:
    """``[(sample index, layer, growth, early norm), ...]`` of gradient norms that grew
    ``EXPLODING_GROWTH`` times above their early median."""
    hits = []
    if trace.sample_steps.size <= T.REFERENCE_SAMPLES:
        return hits
    for layer, j in weights(trace):
        g = trace.grad_norm[:, j]
        ref = median(g[:T.REFERENCE_SAMPLES])
        early_rel = median(relative(trace, j)[:T.REFERENCE_SAMPLES])
        # growth from a gradient too small to learn anything is a dead signal coming back
        if not ref > 0 or not early_rel >= T.EXPLODING_MIN_EARLY:
            continue
        later = g[T.REFERENCE_SAMPLES:]
        crossed = np.nonzero(np.isfinite(later) & (later > T.EXPLODING_GROWTH * ref))[0]
        if crossed.size:
            i = int(crossed[0]) + T.REFERENCE_SAMPLES
            hits.append((i, layer, float(np.nanmax(later[np.isfinite(later)]) / ref), ref))
    hits.sort(key=lambda h: (h[0], -h[2]))
    return hits


def detect_exploding(trace: Trace) -> list[Finding]:
    """Gradient norms that grow over training, or grow a hundredfold towards the input."""
    out = []
    hits = _growth_hits(trace)
    if hits:
        i, layer, growth, ref = hits[0]
        step = int(trace.sample_steps[i])
        out.append(Finding(
            "exploding-gradients", "error" if growth > T.EXPLODING_GROWTH ** 2 else "warning",
            f"gradient norm of {layer} grew {growth:.3g}x above its early value "
            f"(first past {T.EXPLODING_GROWTH:g}x at step {step})",
            "The updates feed on themselves: each step makes the weights larger, which makes "
            "the next gradient larger. Usually a learning rate too high for the loss surface.",
            "Lower the learning rate "
            f"({lr_flag(trace, 0.1, healthy=True)}), clip gradients (--clip-norm 1.0), or add "
            "batch normalisation (--batchnorm).",
            layers=[h[1] for h in hits], steps=[step],
            evidence={"growth": growth, "early_grad_norm": ref,
                      "layers_growth": {h[1]: h[2] for h in hits}},
            action=lr_action(trace, 0.1, healthy=True)))
    ratio, rel = depth_ratio(trace)
    if ratio is not None and ratio > T.EXPLODING_DEPTH_RATIO:
        last = rel[list(rel)[-1]]
        out.append(Finding(
            "exploding-gradients", "warning",
            f"relative gradients grow {ratio:.3g}x from the output layer to the input layer",
            "Each layer multiplies the backward signal by more than one, so the layers near "
            "the input get huge updates: usually weights initialised too large.",
            "Use init='auto' (He for ReLU, Xavier for tanh/sigmoid; --init auto) or add "
            "batch normalisation (--batchnorm).",
            layers=[k for k, v in rel.items() if v > T.EXPLODING_DEPTH_RATIO * last],
            steps=[int(trace.sample_steps[0])],
            evidence={"first_to_last_ratio": ratio, "relative_gradients": rel},
            action={"init": "auto"}))
    return out


def depth_ratio(trace: Trace):
    """Early relative gradient of the first weight layer over that of the last one."""
    ws = weights(trace)
    if len(ws) < 2 or trace.sample_steps.size == 0:
        return None, {}
    n = max(T.REFERENCE_SAMPLES, trace.sample_steps.size // 4)
    rel = {layer: median(relative(trace, j)[:n]) for layer, j in ws}
    first, last = rel[ws[0][0]], rel[ws[-1][0]]
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0 or first <= 0:
        return None, rel
    return first / last, rel


def detect_vanishing(trace: Trace) -> list[Finding]:
    ratio, rel = depth_ratio(trace)
    if ratio is None or ratio >= T.VANISHING_RATIO:
        return []
    last = rel[weights(trace)[-1][0]]
    blamed = [k for k, v in rel.items() if math.isfinite(v) and v < T.VANISHING_RATIO * last]
    progress = loss_summary(trace)["progress"]
    return [Finding(
        "vanishing-gradients", "warning" if progress < 0.5 else "info",
        f"the first layer's relative gradient is {ratio:.2g}x the last layer's "
        f"({len(blamed)} of {len(rel)} weight layers below {T.VANISHING_RATIO:g}x)",
        "The backward signal shrinks at every layer (a sigmoid passes at most 1/4 of it, "
        "a saturated tanh almost none), so the layers near the input barely learn.",
        "Use ReLU-family hidden activations with He initialisation (--activation relu "
        "--init auto), fewer layers, batch normalisation (--batchnorm), or an adaptive "
        "optimizer (--optimizer adam).",
        layers=blamed, steps=[int(trace.sample_steps[0])],
        evidence={"first_to_last_ratio": ratio, "relative_gradients": rel,
                  "loss_progress": progress},
        action={"activation": "relu", "init": "auto"})]


# --- tiny and zero gradients, stalled weights --------------------------------------------

def detect_tiny(trace: Trace) -> list[Finding]:
    s = trace.sample_steps.size
    ws = weights(trace)
    if s == 0 or not ws:
        return []
    tail = late(s)
    rel = {layer: median(relative(trace, j)[tail]) for layer, j in ws}
    zero = {layer for layer, j in ws if np.all(trace.grad_norm[tail, j] == 0)}
    tiny = [k for k, v in rel.items() if k not in zero and math.isfinite(v)
            and v < T.TINY_GRADIENT]
    summary = loss_summary(trace)
    if not tiny or summary["final"] < 0.05 * summary["initial"]:
        return []  # tiny gradients at a minimum are expected
    index = dict(ws)
    updates = {k: median(update_ratio(trace, index[k])[tail]) for k in tiny}
    moved = _how_far_updates_move(updates)
    return [Finding(
        "tiny-gradients", "warning" if summary["progress"] < 0.5 else "info",
        f"relative gradients below {T.TINY_GRADIENT:.2g} in {', '.join(tiny)} while the "
        f"loss is still {summary['final']:.4g}; {moved}",
        "Almost no gradient reaches these weights: saturated units, vanishing gradients, a "
        "forward signal that died, or a loss already flat here.",
        "Check the saturated-units, vanishing-gradients and vanishing-activations findings; "
        "use ReLU hidden layers with init='auto', or an adaptive optimizer (--optimizer adam).",
        layers=tiny, steps=[int(trace.sample_steps[tail.start])],
        evidence={"relative_gradients": rel, "update_ratios": updates})]


def _how_far_updates_move(updates: dict) -> str:
    """What the measured update/weight ratios mean; float32 is blamed only when it is so."""
    largest = max((v for v in updates.values() if math.isfinite(v)), default=math.nan)
    if largest < T.FLOAT32_RESOLUTION:
        return "their updates are below float32 resolution, so the weights do not change at all"
    return (f"each update moves those weights by at most {largest:.2g} of their size, so "
            "learning there would take millions of steps")


def _last_samples(trace: Trace) -> slice:
    s = trace.sample_steps.size
    n = min(s, max(T.ZERO_GRADIENT_SAMPLES, s // 4))
    return slice(s - n, s)


def detect_zero_gradients(trace: Trace) -> list[Finding]:
    ws = weights(trace)
    if not trace.sample_steps.size or not ws:
        return []
    last = _last_samples(trace)
    n = last.stop - last.start
    zero = [layer for layer, j in ws if np.all(trace.grad_norm[last, j] == 0)]
    if not zero or n < min(T.ZERO_GRADIENT_SAMPLES, trace.sample_steps.size):
        return []
    return [Finding(
        "zero-gradients", "error" if len(zero) == len(ws) else "warning",
        f"the weight gradient is exactly 0 in {', '.join(zero)} over the last "
        f"{n} sampled steps",
        "Nothing reaches these weights in the backward pass: all-zero initial "
        "weights (every unit outputs 0 or the same value), dead ReLU units, or a "
        "derivative that returns 0.",
        "Initialise with random weights: init='auto' (--init auto), never zeros; "
        "then check the symmetric-units and dead-relu findings.",
        layers=zero, steps=[int(trace.sample_steps[last.start])],
        evidence={"samples": n}, action={"init": "auto"})]


def detect_stalled(trace: Trace) -> list[Finding]:
    ws = weights(trace)
    if trace.sample_steps.size and ws:
        last = _last_samples(trace)
        ratios = {layer: median(update_ratio(trace, j)[last]) for layer, j in ws}
        stalled = [k for k, v in ratios.items() if v < T.STALLED_UPDATE_RATIO]
        if len(stalled) == len(ws):
            return [Finding(
                "stalled-weights", "error",
                f"the weights stopped changing: update/weight ratio below "
                f"{T.STALLED_UPDATE_RATIO:.2g} in every layer",
                "Each update is too small to change a float32 weight (or exactly zero), so "
                "the model is the same after every step and the cost stays identical.",
                "Fix the cause named by the other findings (zero gradients, symmetric units, "
                "saturation); if there is none, raise the learning rate "
                f"({lr_flag(trace, 10, healthy=True)}).",
                layers=stalled, steps=[int(trace.sample_steps[last.start])],
                evidence={"update_ratios": ratios}, action=lr_action(trace, 10, healthy=True))]
    flat = _flat_cost(trace)
    if not flat:
        return []
    start, length, value = flat
    return [Finding(
        "stalled-weights", "error",
        f"the cost is identical ({value:.6g}) for the last {length} steps",
        "Full-batch gradient descent repeats exactly the same computation when the "
        "weights do not change: the updates are zero or below float32 resolution.",
        "Check the zero-gradients, symmetric-units and saturated-units findings; "
        "re-initialise with init='auto' (--init auto).",
        steps=[start], evidence={"steps": length, "loss": value}, action={"init": "auto"})]


def detect_zero_and_stalled(trace: Trace) -> list[Finding]:
    """Exactly-zero weight gradients, and weights (or a full-batch cost) that stopped changing."""
    return detect_zero_gradients(trace) + detect_stalled(trace)


def _flat_cost(trace: Trace):
    """(first step, length, value) of a bitwise-flat final loss run (full batch only)."""
    if not trace.meta.get("full_batch") or trace.n_steps < T.STALLED_LOSS_STEPS:
        return None
    loss = trace.loss
    tail = loss[-1]
    if not np.isfinite(tail):
        return None
    same = np.abs(loss - tail) <= 1e-7 * max(abs(tail), 1e-12)
    run = int(np.argmin(same[::-1])) if not same.all() else same.size
    if run < T.STALLED_LOSS_STEPS:
        return None
    return int(trace.loss_steps[-run]), run, float(tail)
