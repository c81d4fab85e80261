"""What every detector family reads: the smoothed loss, per-layer ratios, the learning rate.

Everything here is NumPy on the host, on a finished :class:`~nnx.doctor.trace.Trace`.
"""

from __future__ import annotations

import math

import numpy as np

from ..trace import Trace

__all__ = ["median", "smoothed_loss", "loss_summary", "relative", "update_ratio", "weights",
           "lr_of", "lr_flag", "lr_action", "suggest_lr", "early_update_ratio", "late",
           "first_sample_step"]


def median(a) -> float:
    """Median of the finite values of ``a`` (NaN when there are none)."""
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


def loss_summary(trace: Trace) -> dict:
    """Initial, best and final smoothed loss, and the relative progress made.

    ``progress`` is measured from ``reference``: the loss of an uninformed model
    (uniform predictions) when it is known and lower than the initial loss, so
    that a huge initial loss (bad scaling) does not make a poor final loss look
    like progress. ``fall`` is how far the smoothed loss fell from its own start.
    """
    _, s = smoothed_loss(trace)
    if s.size == 0:
        return {"initial": math.nan, "best": math.nan, "final": math.nan, "progress": 0.0,
                "reference": math.nan, "fall": 0.0}
    first = float(trace.loss[0]) if np.isfinite(trace.loss[0]) else float(s[0])
    start = max(first, float(s[0]))
    best, final = float(np.min(s)), float(s[-1])
    ref = min(trace.meta.get("expected_initial_loss") or start, start)
    progress = (ref - final) / ref if ref > 0 else 0.0
    # how far the smoothed loss itself moved, whatever it started from
    fall = (float(s[0]) - final) / float(s[0]) if s[0] > 0 else 0.0
    return {"initial": start, "best": best, "final": final, "progress": progress,
            "reference": ref, "fall": fall}


def relative(trace: Trace, j: int):
    """||g|| / ||w|| per sample for parameter ``j`` (NaN where ||w|| = 0)."""
    w = trace.weight_norm[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, trace.grad_norm[:, j] / w, np.nan)


def update_ratio(trace: Trace, j: int):
    """||dw|| / ||w|| per sample (0 where both are 0, NaN where only ||w|| is)."""
    w, u = trace.weight_norm[:, j], trace.update_norm[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(w > 0, u / w, np.nan)
    return np.where((w == 0) & (u == 0), 0.0, r)


def weights(trace: Trace):
    """``[(layer, column index), ...]`` of the weight matrices, forward order."""
    return [(layer, j) for j, (layer, _key) in enumerate(trace.params)]


def lr_of(trace: Trace) -> float | None:
    """The learning rate the run started with."""
    lr = trace.meta.get("lr")
    if lr is None and trace.lr.size and np.isfinite(trace.lr[0]):
        lr = float(trace.lr[0])
    return lr


def early_update_ratio(trace: Trace) -> float | None:
    """Median over layers of the update/weight ratio at the first sampled steps (finite
    values only): what the learning rate did before anything went wrong."""
    from ..findings import REFERENCE_SAMPLES

    vals = []
    for _layer, j in weights(trace):
        r = update_ratio(trace, j)
        r = r[np.isfinite(r) & (r > 0)][:REFERENCE_SAMPLES]
        if r.size:
            vals.append(float(np.median(r)))
    return float(np.median(vals)) if vals else None


def suggest_lr(trace: Trace, factor: float, *, healthy: bool = False) -> float | None:
    """The run's learning rate times ``factor`` (two significant digits).

    With ``healthy``, the factor grows (or shrinks, for ``factor < 1``) to what would
    bring the early update/weight ratio to ``HEALTHY_UPDATE_RATIO``: updates scale
    with the learning rate, so that is the rate with healthy steps.
    """
    from ..findings import HEALTHY_UPDATE_RATIO

    lr = lr_of(trace)
    if not lr:
        return None
    ratio = early_update_ratio(trace) if healthy else None
    if ratio:
        # within a thousandfold: the first update of a run that blows up overstates it
        to_healthy = HEALTHY_UPDATE_RATIO / ratio
        factor = (min(factor, max(to_healthy, 1e-3)) if factor < 1
                  else max(factor, min(to_healthy, 1e3)))
    return float(f"{lr * factor:.2g}")


def lr_flag(trace: Trace, factor: float, *, healthy: bool = False) -> str:
    """``"--lr 0.01"``: the learning rate :func:`suggest_lr` gives, as a flag."""
    lr = suggest_lr(trace, factor, healthy=healthy)
    return f"--lr {lr:g}" if lr else ("--lr <smaller>" if factor < 1 else "--lr <larger>")


def lr_action(trace: Trace, factor: float, *, healthy: bool = False) -> dict:
    """``{"lr": ...}``: the learning rate :func:`suggest_lr` gives (empty when unknown)."""
    lr = suggest_lr(trace, factor, healthy=healthy)
    return {"lr": lr} if lr else {}


def late(n: int) -> slice:
    """The last quarter of ``n`` samples (at least one)."""
    return slice(n - max(1, n // 4), n)


def first_sample_step(trace: Trace) -> list[int]:
    """``[first sampled step]``, or ``[]`` when nothing was sampled."""
    return [int(trace.sample_steps[0])] if trace.sample_steps.size else []
