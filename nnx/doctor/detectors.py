"""Detectors that read a training :class:`~nnx.doctor.trace.Trace` and return findings.

Each ``detect_*`` function takes the trace and returns a list of
:class:`~nnx.doctor.findings.Finding`; :func:`run_detectors` runs them all.
Thresholds come from :mod:`nnx.doctor.findings`. Everything here is NumPy on
the host, run once at the end of training (or on demand).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import findings as T
from .findings import Finding
from .trace import Trace

__all__ = ["run_detectors", "loss_spikes", "spike_events", "smoothed_loss", "DETECTORS"]


# --- helpers ----------------------------------------------------------------

def _median(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def _smooth_window(trace: Trace) -> int:
    """Steps per smoothing window: one epoch of minibatches (1 for full-batch GD)."""
    meta = trace.meta
    if meta.get("full_batch"):
        return 1
    w = int(meta.get("steps_per_epoch") or 10)
    return max(1, min(w, max(1, trace.n_steps // 10)))


def smoothed_loss(trace: Trace):
    """``(steps, loss)`` of the finite loss, moving-averaged over one epoch of steps."""
    ok = np.isfinite(trace.loss)
    steps, loss = trace.loss_steps[ok], trace.loss[ok]
    w = _smooth_window(trace)
    if loss.size < w or w == 1:
        return steps, loss
    kernel = np.ones(w) / w
    return steps[w - 1:], np.convolve(loss, kernel, mode="valid")


def _loss_summary(trace: Trace) -> dict:
    """Initial, best and final smoothed loss, and the relative progress made."""
    _, s = smoothed_loss(trace)
    if s.size == 0:
        return {"initial": math.nan, "best": math.nan, "final": math.nan, "progress": 0.0,
                "reference": math.nan}
    first = float(trace.loss[0]) if np.isfinite(trace.loss[0]) else float(s[0])
    start = max(first, float(s[0]))
    best, final = float(np.min(s)), float(s[-1])
    # measure progress from the loss of an uninformed model when it is known, so that a
    # huge initial loss (bad scaling) does not make a poor final loss look like progress
    ref = trace.meta.get("expected_initial_loss") or start
    ref = min(ref, start)
    progress = (ref - final) / ref if ref > 0 else 0.0
    return {"initial": start, "best": best, "final": final, "progress": progress,
            "reference": ref}


def _relative(trace: Trace, j: int):
    """||g|| / ||w|| per sample for parameter ``j`` (NaN where ||w|| = 0)."""
    w = trace.weight_norm[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, trace.grad_norm[:, j] / w, np.nan)


def _update_ratio(trace: Trace, j: int):
    """||dw|| / ||w|| per sample (0 where both are 0, NaN where only ||w|| is)."""
    w, u = trace.weight_norm[:, j], trace.update_norm[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(w > 0, u / w, np.nan)
    return np.where((w == 0) & (u == 0), 0.0, r)


def _weights(trace: Trace):
    """``[(layer, column index), ...]`` of the weight matrices, forward order."""
    return [(layer, j) for j, (layer, key) in enumerate(trace.params)]


def _lr(trace: Trace) -> float | None:
    lr = trace.meta.get("lr")
    if lr is None and trace.lr.size and np.isfinite(trace.lr[0]):
        lr = float(trace.lr[0])
    return lr


def _lr_flag(trace: Trace, factor: float) -> str:
    lr = _lr(trace)
    return f"--lr {lr * factor:.3g}" if lr else "--lr <smaller>"


# --- non-finite and exploding ---------------------------------------------------

def detect_non_finite(trace: Trace) -> list[Finding]:
    """NaN/inf in the loss (exact step), activations, gradients or weights (sampled steps).

    The layer blamed is the first one (in forward order) whose activations were
    non-finite at the first sampled step showing any, if that step is no later than
    the first non-finite loss; otherwise (the overflow happened between samples) the
    layer whose pre-activations or gradients grew the most before it.
    """
    loss_bad = ~np.isfinite(trace.loss)
    first_loss = int(trace.loss_steps[np.argmax(loss_bad)]) if loss_bad.any() else None
    # the means (columns 0 and 2); the stds come from sums of squares, which overflow
    # float32 long before the values themselves do
    act_bad = ~np.isfinite(trace.act[:, :, [0, 2]]).all(axis=2) if trace.act.size else None
    grad_bad = ~np.isfinite(trace.grad_norm)
    weight_bad = ~np.isfinite(trace.weight_norm)
    culprit, first_sample, what = None, None, None
    for s in range(trace.sample_steps.size):
        if act_bad is not None and act_bad[s].any():
            li = int(np.argmax(act_bad[s]))
            culprit, what = trace.layers[li].owner, f"the output of {trace.layers[li].label}"
        elif weight_bad[s].any():
            culprit = trace.params[int(np.argmax(weight_bad[s]))][0]
            what = f"the weights of {culprit}"
        elif grad_bad[s].any():
            # non-finite gradients flow from the output backwards: the last one
            # in forward order is where they first appear
            j = int(np.nonzero(grad_bad[s])[0][-1])
            culprit, what = trace.params[j][0], f"the gradient of {trace.params[j][0]}"
        else:
            continue
        first_sample = int(trace.sample_steps[s])
        break
    if first_loss is None and first_sample is None:
        return []
    steps = [s for s in (first_loss, first_sample) if s is not None]
    first = min(steps)
    evidence = {"first_nonfinite_loss_step": first_loss,
                "first_nonfinite_sample_step": first_sample, "lr": _lr(trace)}
    if first_sample is not None and (first_loss is None or first_sample <= first_loss):
        where = f"; first non-finite value in {what} at step {first_sample}"
    else:
        culprit, growth = _fastest_growth(trace, first)
        where = (f"; before it, values grew fastest in {culprit} ({growth:.3g}x)"
                 if culprit else "; sample every step (every=1) to see the layer")
        evidence["growth_before_overflow"] = growth
    return [Finding(
        "non-finite", "error",
        f"non-finite values from step {first}" + (f" (loss at step {first_loss})"
                                                   if first_loss is not None else "") + where,
        "A value overflowed float32 (above 3.4e38) or became NaN, usually because the "
        "learning rate is too high or gradients exploded; once NaN, every later step is NaN.",
        f"Lower the learning rate ({_lr_flag(trace, 0.1)}), clip gradients (--clip-norm 1.0, "
        "or clip_norm=1.0 in the optimizer), or run the learning-rate range test (--lr-find).",
        layers=[culprit] if culprit else [], steps=sorted(set(steps)), evidence=evidence)]


def _fastest_growth(trace: Trace, before: int):
    """The layer whose pre-activation std or weight gradient grew most before ``before``."""
    keep = np.nonzero(trace.sample_steps < before)[0]
    if keep.size < 2:
        return None, math.nan
    a, b = keep[0], keep[-1]
    best, growth = None, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        for li, unit in enumerate(trace.layers):
            g = trace.act[b, li, 1] / trace.act[a, li, 1]
            if np.isfinite(g) and g > growth:
                best, growth = unit.owner, float(g)
        for j, (layer, _) in enumerate(trace.params):
            g = trace.grad_norm[b, j] / trace.grad_norm[a, j]
            if np.isfinite(g) and g > growth:
                best, growth = layer, float(g)
    return best, growth


def detect_exploding(trace: Trace) -> list[Finding]:
    """Gradient norms that grow over training, or grow a hundredfold towards the input."""
    out = []
    weights = _weights(trace)
    s_count = trace.sample_steps.size
    hits = []
    for layer, j in weights:
        g = trace.grad_norm[:, j]
        ref = _median(g[:T.REFERENCE_SAMPLES])
        if not (ref > 0) or s_count <= T.REFERENCE_SAMPLES:
            continue
        later = g[T.REFERENCE_SAMPLES:]
        crossed = np.nonzero(np.isfinite(later) & (later > T.EXPLODING_GROWTH * ref))[0]
        if crossed.size:
            i = int(crossed[0]) + T.REFERENCE_SAMPLES
            hits.append((i, layer, float(np.nanmax(later[np.isfinite(later)]) / ref), ref))
    if hits:
        hits.sort(key=lambda h: (h[0], -h[2]))
        i, layer, growth, ref = hits[0]
        step = int(trace.sample_steps[i])
        out.append(Finding(
            "exploding-gradients", "error" if growth > T.EXPLODING_GROWTH ** 2 else "warning",
            f"gradient norm of {layer} grew {growth:.3g}x above its early value "
            f"(first past {T.EXPLODING_GROWTH:g}x at step {step})",
            "The updates feed on themselves: each step makes the weights larger, which makes "
            "the next gradient larger. Usually a learning rate too high for the loss surface.",
            f"Clip gradients (--clip-norm 1.0), lower the learning rate ({_lr_flag(trace, 0.1)}),"
            " or add batch normalisation (--batchnorm).",
            layers=[h[1] for h in hits], steps=[step],
            evidence={"growth": growth, "early_grad_norm": ref,
                      "layers_growth": {h[1]: h[2] for h in hits}}))
    ratio, rel = _depth_ratio(trace)
    if ratio is not None and ratio > T.EXPLODING_DEPTH_RATIO:
        out.append(Finding(
            "exploding-gradients", "warning",
            f"relative gradients grow {ratio:.3g}x from the output layer to the input layer",
            "Each layer multiplies the backward signal by more than one, so the layers near "
            "the input get huge updates: usually weights initialised too large.",
            "Use init='auto' (He for ReLU, Xavier for tanh/sigmoid; --init auto) or add "
            "batch normalisation (--batchnorm).",
            layers=[k for k, v in rel.items() if v > T.EXPLODING_DEPTH_RATIO * rel[
                list(rel)[-1]]], steps=[int(trace.sample_steps[0])],
            evidence={"first_to_last_ratio": ratio, "relative_gradients": rel}))
    return out


def _depth_ratio(trace: Trace):
    """Early relative gradient of the first weight layer over that of the last one."""
    weights = _weights(trace)
    if len(weights) < 2 or trace.sample_steps.size == 0:
        return None, {}
    n = max(T.REFERENCE_SAMPLES, trace.sample_steps.size // 4)
    rel = {layer: _median(_relative(trace, j)[:n]) for layer, j in weights}
    first, last = rel[weights[0][0]], rel[weights[-1][0]]
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0 or first <= 0:
        return None, rel
    return first / last, rel


# --- vanishing, tiny and zero gradients, stalled weights --------------------------

def detect_vanishing(trace: Trace) -> list[Finding]:
    ratio, rel = _depth_ratio(trace)
    if ratio is None or ratio >= T.VANISHING_RATIO:
        return []
    last = rel[_weights(trace)[-1][0]]
    blamed = [k for k, v in rel.items() if math.isfinite(v) and v < T.VANISHING_RATIO * last]
    stuck = _loss_summary(trace)["progress"] < 0.5
    return [Finding(
        "vanishing-gradients", "warning" if stuck else "info",
        f"the first layer's relative gradient is {ratio:.2g}x the last layer's "
        f"({len(blamed)} of {len(rel)} weight layers below {T.VANISHING_RATIO:g}x)",
        "The backward signal shrinks at every layer (a sigmoid passes at most 1/4 of it, "
        "a saturated tanh almost none), so the layers near the input barely learn.",
        "Use ReLU-family hidden activations (--activation relu) with init='auto', fewer "
        "layers, batch normalisation (--batchnorm), or an adaptive optimizer "
        "(--optimizer adam).",
        layers=blamed, steps=[int(trace.sample_steps[0])],
        evidence={"first_to_last_ratio": ratio, "relative_gradients": rel,
                  "loss_progress": _loss_summary(trace)["progress"]})]


def _late(n: int) -> slice:
    """The last quarter of ``n`` samples (at least one)."""
    return slice(n - max(1, n // 4), n)


def detect_tiny(trace: Trace) -> list[Finding]:
    s = trace.sample_steps.size
    weights = _weights(trace)
    if s == 0 or not weights:
        return []
    late = _late(s)
    rel = {layer: _median(_relative(trace, j)[late]) for layer, j in weights}
    zero = {layer for layer, j in weights if np.all(trace.grad_norm[late, j] == 0)}
    tiny = [k for k, v in rel.items() if k not in zero and math.isfinite(v)
            and v < T.TINY_GRADIENT]
    summary = _loss_summary(trace)
    if not tiny or summary["final"] < 0.05 * summary["initial"]:
        return []  # tiny gradients at a minimum are expected
    return [Finding(
        "tiny-gradients", "warning" if summary["progress"] < 0.5 else "info",
        f"relative gradients below {T.TINY_GRADIENT:.2g} in {', '.join(tiny)} while the "
        f"loss is still {summary['final']:.4g}",
        "The gradient is smaller than float32 can add to the weights, so plain SGD cannot "
        "change them: saturated units, vanishing gradients or a loss already flat here.",
        "Check the saturated-units and vanishing-gradients findings; use ReLU hidden "
        "layers with init='auto', or an adaptive optimizer (--optimizer adam).",
        layers=tiny, steps=[int(trace.sample_steps[late.start])],
        evidence={"relative_gradients": rel})]


def detect_zero_and_stalled(trace: Trace) -> list[Finding]:
    out = []
    s = trace.sample_steps.size
    weights = _weights(trace)
    if s and weights:
        n = min(s, max(T.ZERO_GRADIENT_SAMPLES, s // 4))
        last = slice(s - n, s)
        zero = [layer for layer, j in weights if np.all(trace.grad_norm[last, j] == 0)]
        if zero and n >= min(T.ZERO_GRADIENT_SAMPLES, s):
            out.append(Finding(
                "zero-gradients", "error" if len(zero) == len(weights) else "warning",
                f"the weight gradient is exactly 0 in {', '.join(zero)} over the last "
                f"{n} sampled steps",
                "Nothing reaches these weights in the backward pass: all-zero initial "
                "weights (every unit outputs 0 or the same value), dead ReLU units, or a "
                "derivative that returns 0.",
                "Initialise with random weights: init='auto' (--init auto), never zeros; "
                "then check the symmetric-units and dead-relu findings.",
                layers=zero, steps=[int(trace.sample_steps[last.start])],
                evidence={"samples": n}))
        ratios = {layer: _median(_update_ratio(trace, j)[last]) for layer, j in weights}
        stalled = [k for k, v in ratios.items() if v < T.STALLED_UPDATE_RATIO]
        if len(stalled) == len(weights):
            out.append(Finding(
                "stalled-weights", "error",
                f"the weights stopped changing: update/weight ratio below "
                f"{T.STALLED_UPDATE_RATIO:.2g} in every layer",
                "Each update is too small to change a float32 weight (or exactly zero), so "
                "the model is the same after every step and the cost stays identical.",
                "Fix the cause named by the other findings (zero gradients, symmetric units, "
                f"saturation); if there is none, raise the learning rate ({_lr_flag(trace, 10)}).",
                layers=stalled, steps=[int(trace.sample_steps[last.start])],
                evidence={"update_ratios": ratios}))
    flat = _flat_cost(trace)
    if flat and not any(f.id == "stalled-weights" for f in out):
        start, length, value = flat
        out.append(Finding(
            "stalled-weights", "error",
            f"the cost is identical ({value:.6g}) for the last {length} steps",
            "Full-batch gradient descent repeats exactly the same computation when the "
            "weights do not change: the updates are zero or below float32 resolution.",
            "Check the zero-gradients, symmetric-units and saturated-units findings; "
            "re-initialise with init='auto' (--init auto).",
            steps=[start], evidence={"steps": length, "loss": value}))
    return out


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


# --- learning rate ------------------------------------------------------------------

def _median_update_ratio(trace: Trace):
    weights = _weights(trace)
    if not weights or trace.sample_steps.size == 0:
        return None, {}
    ratios = {layer: _median(_update_ratio(trace, j)) for layer, j in weights}
    vals = [v for v in ratios.values() if math.isfinite(v) and v > 0]
    return (float(np.median(vals)) if vals else None), ratios


def detect_learning_rate(trace: Trace, found: list[Finding]) -> list[Finding]:
    """Learning rate too high or too low, from update ratios *and* the loss curve."""
    ratio, per_layer = _median_update_ratio(trace)
    summary = _loss_summary(trace)
    ids = {f.id for f in found}
    lr = _lr(trace)
    evidence = {"lr": lr, "median_update_ratio": ratio, "update_ratios": per_layer,
                "healthy_update_ratio": T.HEALTHY_UPDATE_RATIO,
                "loss_initial": summary["initial"], "loss_best": summary["best"],
                "loss_final": summary["final"]}
    diverged = (math.isfinite(summary["best"]) and summary["best"] > 0
                and summary["final"] > T.DIVERGENCE_FACTOR * summary["best"]
                and summary["final"] > summary["best"] + 0.05 * summary["initial"])
    unstable = bool(ids & {"non-finite", "loss-spikes", "loss-oscillation",
                           "exploding-gradients"})
    big = ratio is not None and ratio > T.LR_HIGH_UPDATE_RATIO
    saturated_late = "saturated-units" in ids and big
    if diverged or "non-finite" in ids or (big and (unstable or summary["progress"] < 0.5)) \
            or saturated_late:
        why = []
        if "non-finite" in ids:
            why.append("the loss became non-finite")
        if diverged:
            why.append(f"the loss rose from its best {summary['best']:.4g} to "
                       f"{summary['final']:.4g}")
        if big:
            why.append(f"updates are {ratio:.2g} of the weights per step "
                       f"(healthy is about {T.HEALTHY_UPDATE_RATIO:g})")
        if unstable and "non-finite" not in ids:
            why.append("the loss is unstable")
        # with a broken initialisation or unscaled inputs every learning rate looks too
        # high: the gradients themselves are huge; that cause comes first
        init_issue = ids & {"initial-loss-off", "unscaled-inputs", "symmetric-units"} or any(
            f.id == "exploding-gradients" and "output layer to the input" in f.title
            for f in found)
        if init_issue:
            why.append("but fix the initialisation/input scaling first: "
                       + ", ".join(sorted(ids & {"initial-loss-off", "unscaled-inputs",
                                                 "symmetric-units", "exploding-gradients"})))
        return [Finding(
            "lr-too-high", "info" if init_issue else (
                "error" if "non-finite" in ids or diverged else "warning"),
            "learning rate too high" + (f" (lr {lr:g})" if lr else "") + ": "
            + "; ".join(why),
            "Each step overshoots the minimum: the loss jumps, oscillates or diverges, and "
            "sigmoid/tanh units are pushed into saturation.",
            f"Lower the learning rate about tenfold ({_lr_flag(trace, 0.1)}), or find one with "
            "the range test: --lr-find (nnx.doctor.lr_find(model, loss, x, y)).",
            layers=[k for k, v in per_layer.items() if v > T.LR_HIGH_UPDATE_RATIO],
            steps=[int(trace.sample_steps[0])] if trace.sample_steps.size else [],
            evidence=evidence)]
    small = ratio is not None and ratio < T.LR_LOW_UPDATE_RATIO
    blocked = bool(ids & {"zero-gradients", "stalled-weights", "tiny-gradients",
                          "symmetric-units", "vanishing-gradients"})
    if small and summary["progress"] < T.LOW_PROGRESS and not blocked:
        return [Finding(
            "lr-too-low", "warning",
            "learning rate too low" + (f" (lr {lr:g})" if lr else "")
            + f": updates are {ratio:.2g} of the weights per step and the loss fell only "
            f"{100 * summary['progress']:.1f}%",
            "The steps are so small that training would need thousands of times more of them.",
            f"Raise the learning rate about tenfold ({_lr_flag(trace, 10)}), or find one with "
            "the range test: --lr-find.",
            layers=list(per_layer), steps=[int(trace.sample_steps[0])], evidence=evidence)]
    return []


# --- the loss curve -----------------------------------------------------------------

def detect_initial_loss(trace: Trace) -> list[Finding]:
    if trace.n_steps == 0 or not np.isfinite(trace.loss[0]):
        return []
    first = float(trace.loss[0])
    meta = trace.meta
    expected = meta.get("expected_initial_loss")
    factor, margin = T.INITIAL_LOSS_FACTOR, T.INITIAL_LOSS_MARGIN
    if expected is None and meta.get("target_sq_mean") is not None:
        expected, factor = float(meta["target_sq_mean"]), T.INITIAL_LOSS_FACTOR_REGRESSION
        margin = 0.0
    if expected is None or expected <= 0 or first <= factor * expected + margin:
        return []
    what = (f"ln {meta['n_classes']} = {expected:.3g}" if meta.get("loss") ==
            "softmax_cross_entropy" and meta.get("n_classes") else f"{expected:.3g}")
    return [Finding(
        "initial-loss-off", "warning",
        f"the loss at step 0 is {first:.4g}, {first / expected:.1f}x the {what} expected from "
        "a model that has not learned anything yet",
        "The untrained outputs are large and confidently wrong: inputs not scaled, weights "
        "initialised too large, or an output bias far from the targets.",
        "Standardise the inputs with training-set statistics (--standardize), use "
        "init='auto' (--init auto), and check the unscaled-inputs finding.",
        layers=[trace.weight_layers()[-1]] if trace.weight_layers() else [],
        steps=[int(trace.loss_steps[0])],
        evidence={"initial_loss": first, "expected": expected,
                  "threshold": factor * expected + margin})]


def loss_spikes(trace: Trace) -> np.ndarray:
    """Indices into ``trace.loss`` of the spikes.

    A spike is a step whose loss is ``SPIKE_FACTOR`` times the running median of
    the previous ``SPIKE_WINDOW`` steps and that falls back below ``1/SPIKE_FACTOR``
    of its peak within the next ``SPIKE_WINDOW`` steps (a transient, not a
    divergence). With minibatches, the loss of one batch is noisy, so it must also
    exceed the median by ``SPIKE_MAD`` robust standard deviations and undo
    ``SPIKE_UNDO`` of the progress made so far; full-batch losses have no noise.
    """
    loss = trace.loss
    n = loss.size
    w = T.SPIKE_WINDOW
    if n <= w + 1:
        return np.zeros(0, dtype=np.int64)
    finite = np.where(np.isfinite(loss), loss, np.nan)
    if not np.isfinite(finite[:w]).any():
        return np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        windows = np.lib.stride_tricks.sliding_window_view(finite[:-1], w)  # (n - w, w)
        med = np.nanmedian(windows, axis=1)
        x = finite[w:]
        after = np.full(x.shape, np.nan)
        ahead = np.lib.stride_tricks.sliding_window_view(
            np.concatenate([finite[w + 1:], np.full(w, np.nan)]), w)
        after = np.nanmin(ahead, axis=1)
        spike = (x > T.SPIKE_FACTOR * med) & (after < x / T.SPIKE_FACTOR)
        if not trace.meta.get("full_batch"):
            mad = np.nanmedian(np.abs(windows - med[:, None]), axis=1) * 1.4826
            start = float(np.nanmax(finite[:w]))
            best_so_far = np.fmin.accumulate(np.where(np.isfinite(finite), finite, np.inf))
            progress = np.maximum(start - best_so_far[w - 1:-1], 0.0)
            spike &= (x > med + T.SPIKE_MAD * mad) & (x - med > T.SPIKE_UNDO * progress)
    return np.nonzero(spike)[0] + w


def spike_events(spikes: np.ndarray) -> np.ndarray:
    """The first index of each run of spiking steps (steps at most 2 apart form one spike)."""
    return spikes[np.concatenate([[True], np.diff(spikes) > 2])] if spikes.size else spikes


def detect_loss_curve(trace: Trace) -> list[Finding]:
    out = []
    spikes = loss_spikes(trace)
    events = spike_events(spikes)
    rate = events.size / max(1, trace.n_steps)
    if events.size >= T.SPIKE_MIN_COUNT and rate >= T.SPIKE_MIN_RATE:
        steps = trace.loss_steps[events]
        big = float(np.max(trace.loss[spikes]))
        late = bool(np.any(events >= 0.75 * trace.n_steps))
        settled = _loss_summary(trace)["progress"] >= T.UNIT_PROGRESS and not late
        out.append(Finding(
            "loss-spikes", "info" if settled else "warning",
            f"{events.size} loss spikes (up to {big:.4g}), first at step {int(steps[0])}",
            "Single steps that throw away a good part of the progress: the step size is too "
            "large for the sharpest direction of the loss surface (common with full-batch "
            "gradient descent at a high learning rate).",
            f"Lower the learning rate ({_lr_flag(trace, 0.3)}), use momentum or Adam "
            "(--optimizer adam), use minibatches (--batch-size 64), or clip gradients "
            "(--clip-norm 1.0).",
            steps=[int(s) for s in steps[:20]],
            evidence={"spikes": int(events.size), "spiking_steps": int(spikes.size),
                      "largest": big, "rate": rate}))
    steps, s = smoothed_loss(trace)
    summary = _loss_summary(trace)
    start = summary["initial"]
    if s.size >= 8 and start > 0:
        half = s[s.size // 2:]
        d = np.diff(half)
        ups = d > T.OSCILLATION_STEP * start
        downs = d < -T.OSCILLATION_STEP * start
        frac = float(np.mean(ups)) if d.size else 0.0
        frac_down = float(np.mean(downs)) if d.size else 0.0
        net = (half[0] - half[-1]) / start
        if min(frac, frac_down) >= T.OSCILLATION_FRACTION:
            out.append(Finding(
                "loss-oscillation", "warning",
                f"the loss went up in {100 * frac:.0f}% and down in {100 * frac_down:.0f}% of "
                f"the moves in the second half of training (net change {100 * -net:+.1f}% of "
                "the initial loss)",
                "The optimizer bounces across a valley instead of descending it: the learning "
                "rate is too high for this curvature.",
                f"Lower the learning rate ({_lr_flag(trace, 0.3)}) or use momentum/Adam "
                "(--optimizer adam).",
                steps=[int(steps[s.size // 2])],
                evidence={"up_fraction": frac, "down_fraction": frac_down,
                          "net_decrease": net}))
    n_steps = trace.n_steps
    if s.size >= 4 and n_steps >= T.PLATEAU_MIN_STEPS and start > 0:
        mid, end = float(s[s.size // 2]), float(s[-1])
        change = abs(mid - end) / max(abs(mid), 1e-12)
        if change < T.PLATEAU_CHANGE and end > T.PLATEAU_LOSS_FRACTION * summary["reference"]:
            expected = trace.meta.get("expected_initial_loss")
            prior = ""
            if expected and abs(end - expected) < 0.05 * expected:
                prior = (f" - that is the loss of predicting the class frequencies "
                         f"({expected:.3g}); the model has learned nothing from the inputs")
            out.append(Finding(
                "loss-plateau", "warning",
                f"the loss is stuck at {end:.4g} ({100 * end / start:.0f}% of where it "
                f"started) over the last {n_steps - int(steps[s.size // 2])} steps" + prior,
                "Learning has stopped while the loss is still high: no useful gradient "
                "reaches the weights (vanishing or zero gradients, saturation, dead units) "
                "or the learning rate is far off.",
                "See the other findings for the cause; the usual fix is ReLU hidden layers "
                "with init='auto' and Adam (--activation relu --optimizer adam).",
                steps=[int(steps[s.size // 2])],
                evidence={"loss": end, "initial": start, "change": change}))
    return out


# --- units ----------------------------------------------------------------------------

def detect_units(trace: Trace) -> list[Finding]:
    """Dead ReLU units and saturated sigmoid/tanh units, per layer, over recent windows."""
    out = []
    window = trace.recent_windows(T.DEAD_MIN_ROWS)
    if window is None or window.rows < min(T.DEAD_MIN_ROWS, 64):
        return out
    first_bad = _first_window_steps(trace)
    dead_layers, sat_layers = [], []
    for li, unit in enumerate(trace.layers):
        active = window.active[li] if li < len(window.active) else None
        if active is not None and unit.can_die.any():
            dead = (active == 0) & unit.can_die
            frac = float(dead.sum() / unit.can_die.sum())
            if frac >= T.DEAD_FRACTION:
                dead_layers.append((unit, frac, int(dead.sum()), int(unit.can_die.sum())))
        sat = window.saturated[li] if li < len(window.saturated) else None
        if sat is not None and unit.saturates.any():
            per_unit = sat[unit.saturates] / window.rows
            frac = float(per_unit.mean())
            if frac >= T.SATURATED_FRACTION:
                sat_layers.append((unit, frac, int((per_unit > 0.9).sum()),
                                   int(unit.saturates.sum())))
    progress = _loss_summary(trace)["progress"]
    if dead_layers:
        worst = max(f for _, f, _, _ in dead_layers)
        desc = "; ".join(f"{u.label}: {d} of {n} units ({100 * f:.0f}%)"
                         for u, f, d, n in dead_layers)
        out.append(Finding(
            "dead-relu", _unit_severity(worst, T.DEAD_FRACTION_ERROR, progress),
            f"dead ReLU units, never active over the last {window.rows} sampled examples "
            f"(steps {window.first_step}-{window.last_step}): {desc}",
            "A ReLU unit whose pre-activation is negative for every input outputs 0 and gets "
            "zero gradient, so it never recovers. Large updates (a high learning rate) or a "
            "large negative bias push units there.",
            f"Lower the learning rate ({_lr_flag(trace, 0.1)}), use leaky ReLU "
            "(--activation leaky_relu) or ELU, and keep init='auto' (He).",
            layers=[u.owner for u, _, _, _ in dead_layers],
            steps=[first_bad.get(("dead", u.name), window.first_step)
                   for u, _, _, _ in dead_layers],
            evidence={u.owner: {"dead_fraction": f, "dead_units": d, "units": n}
                      for u, f, d, n in dead_layers} | {"rows": window.rows}))
    if sat_layers:
        worst = max(f for _, f, _, _ in sat_layers)
        desc = "; ".join(f"{u.label}: {100 * f:.0f}% saturated, {k} of {n} units almost always"
                         for u, f, k, n in sat_layers)
        out.append(Finding(
            "saturated-units", _unit_severity(worst, T.SATURATED_FRACTION_ERROR, progress),
            f"saturated units over the last {window.rows} sampled examples: {desc}",
            "Sigmoid/tanh outputs pinned near their bounds have a derivative close to 0, so "
            "almost no gradient passes: pre-activations too large, from a high learning rate, "
            "unscaled inputs or large initial weights.",
            f"Lower the learning rate ({_lr_flag(trace, 0.1)}), standardise the inputs, use "
            "init='auto' (Xavier for tanh/sigmoid), or switch to ReLU (--activation relu).",
            layers=[u.owner for u, _, _, _ in sat_layers],
            steps=[first_bad.get(("sat", u.name), window.first_step)
                   for u, _, _, _ in sat_layers],
            evidence={u.owner: {"saturated_fraction": f, "mostly_saturated_units": k,
                                "units": n} for u, f, k, n in sat_layers}
            | {"rows": window.rows}))
    return out


def _unit_severity(fraction: float, error_from: float, progress: float) -> str:
    """Error when most units are lost; otherwise a warning only while the loss is high."""
    if fraction >= error_from:
        return "error"
    return "warning" if progress < T.UNIT_PROGRESS else "info"


def _first_window_steps(trace: Trace) -> dict:
    """First step at which each layer crossed the dead/saturated thresholds (by window)."""
    first = {}
    for w in trace.windows:
        for li, unit in enumerate(trace.layers):
            a = w.active[li] if li < len(w.active) else None
            if a is not None and unit.can_die.any() and w.rows >= min(T.DEAD_MIN_ROWS, 64):
                if ((a == 0) & unit.can_die).sum() / unit.can_die.sum() >= T.DEAD_FRACTION:
                    first.setdefault(("dead", unit.name), w.first_step)
            s = w.saturated[li] if li < len(w.saturated) else None
            if s is not None and unit.saturates.any() and w.rows:
                if (s[unit.saturates] / w.rows).mean() >= T.SATURATED_FRACTION:
                    first.setdefault(("sat", unit.name), w.first_step)
    return first


# --- generalisation -------------------------------------------------------------------

def detect_overfitting(trace: Trace) -> list[Finding]:
    logs = [e for e in trace.epochs if e.get("val_loss") is not None]
    if len(logs) < T.OVERFIT_PATIENCE + 2:
        return []
    val = np.array([e["val_loss"] for e in logs], dtype=np.float64)
    train = np.array([e.get("loss", np.nan) for e in logs], dtype=np.float64)
    if not np.isfinite(val).all():
        return []
    best = int(np.argmin(val))
    rise = (val[-1] - val[best]) / max(val[best], 1e-12)
    epochs_after = len(val) - 1 - best
    train_falls = np.isfinite(train[[best, -1]]).all() and train[-1] < train[best]
    gap_grows = (val[-1] - train[-1]) > (val[best] - train[best])
    acc, val_acc = logs[-1].get("accuracy"), logs[-1].get("val_accuracy")
    acc_gap = (acc - val_acc) if acc is not None and val_acc is not None else None
    by_loss = rise > T.OVERFIT_RISE and epochs_after >= T.OVERFIT_PATIENCE and train_falls \
        and gap_grows
    by_acc = acc_gap is not None and acc_gap > T.OVERFIT_ACCURACY_GAP and acc >= 0.99
    if not (by_loss or by_acc):
        return []
    # the issue is a gap that grows while the validation loss rises; a large accuracy
    # gap alone (a small data set, a model stopped early) is noted, and so is a rising
    # validation loss while the curves stay close or the accuracies agree
    rel_gap = (val[-1] - train[-1]) / max(val[-1], 1e-12)
    mild = (not by_loss or rel_gap < T.OVERFIT_GAP
            or (acc_gap is not None and acc_gap < T.OVERFIT_ACCURACY_GAP / 2))
    epoch0 = logs[0].get("epoch", 0)
    parts = []
    if by_loss:
        parts.append(f"validation loss rose {100 * rise:.0f}% since its best at epoch "
                     f"{best + epoch0} while the training loss kept falling")
    if acc_gap is not None:
        parts.append(f"train accuracy {100 * acc:.1f}% vs validation {100 * val_acc:.1f}%")
    return [Finding(
        "overfitting", "info" if mild else "warning", "; ".join(parts),
        "The network memorises the training examples instead of learning what generalises: "
        "too many parameters or epochs for the amount of data.",
        f"Stop at the best epoch (--early-stopping {T.OVERFIT_PATIENCE}), add regularisation "
        "(--weight-decay 1e-4 or --dropout 0.2), use a smaller network, or get more data.",
        steps=[int(best)],
        evidence={"best_epoch": best + epoch0, "best_val_loss": float(val[best]),
                  "final_val_loss": float(val[-1]), "final_train_loss": float(train[-1]),
                  "relative_gap": rel_gap, "accuracy_gap": acc_gap})]


def detect_majority_class(trace: Trace) -> list[Finding]:
    """Accuracy equal to the majority class share: the model predicts one class."""
    share = trace.meta.get("majority_share")
    logs = trace.epochs
    if share is None or not logs or share < 0.6:
        return []
    acc = logs[-1].get("accuracy")
    if acc is None or abs(acc - share) > 0.005:
        return []
    return [Finding(
        "class-imbalance", "warning",
        f"training accuracy {100 * acc:.1f}% equals the share of the largest class "
        f"({100 * share:.1f}%): the model predicts that class for everything",
        "With a rare class, always answering the common one already scores well, and the "
        "loss gives the rare class little weight.",
        "Report per-class recall rather than accuracy; rebalance the data (oversample the "
        "rare class) or weight the loss.",
        evidence={"accuracy": acc, "majority_share": share})]


#: the detectors in the order they run (the learning-rate one runs last: it reads the others)
DETECTORS = [detect_non_finite, detect_exploding, detect_vanishing, detect_tiny,
             detect_zero_and_stalled, detect_initial_loss, detect_loss_curve, detect_units,
             detect_overfitting, detect_majority_class]


def run_detectors(trace: Trace, known: list[Finding] = ()) -> list[Finding]:
    """Run every detector on ``trace``; ``known`` are earlier (static) findings.

    Once a value is non-finite, everything after it is NaN, so the other
    detectors only read what came before the first non-finite step.
    """
    found = detect_non_finite(trace)
    if found:
        first = min(found[0].steps)
        clean = trace.until(first)
    else:
        clean = trace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for detect in DETECTORS:
            if detect is not detect_non_finite:
                found.extend(detect(clean))
        found.extend(detect_learning_rate(clean, list(known) + found))
    return found
