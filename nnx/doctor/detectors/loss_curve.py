"""Loss-curve detectors: the loss at initialisation, spikes, oscillation and plateaus.

Each ``detect_*`` takes a :class:`~nnx.doctor.trace.Trace` and returns a list
of :class:`~nnx.doctor.findings.Finding`; thresholds are the constants of
:mod:`nnx.doctor.findings`.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace
from .common import loss_summary, lr_action, lr_flag, smoothed_loss

__all__ = ["detect_initial_loss", "detect_loss_curve", "detect_spikes", "detect_oscillation",
           "detect_plateau", "loss_spikes", "find_spikes", "spike_events"]


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
    recovered = _recovered_by(trace, expected)
    note = (f"; it fell below that by step {recovered}, early enough not to matter"
            if recovered is not None else "")
    return [Finding(
        "initial-loss-off", "warning" if recovered is None else "info",
        f"the loss at step 0 is {first:.4g}, {first / expected:.1f}x the {what} expected from "
        "a model that has not learned anything yet" + note,
        "The untrained outputs are large and confidently wrong: inputs not scaled, weights "
        "initialised too large, or an output bias far from the targets.",
        "Standardise the inputs with training-set statistics (--standardize), use "
        "init='auto' (--init auto), and check the unscaled-inputs finding.",
        layers=[trace.weight_layers()[-1]] if trace.weight_layers() else [],
        steps=[int(trace.loss_steps[0])],
        evidence={"initial_loss": first, "expected": expected,
                  "threshold": factor * expected + margin},
        action={"init": "auto"})]


def _recovered_by(trace: Trace, expected: float) -> int | None:
    """The step by which the smoothed loss fell below ``expected`` if that happened within
    the first ``INITIAL_LOSS_RECOVERY`` of training: a start that did not hold training
    back is a cause without a symptom."""
    steps, s = smoothed_loss(trace)
    below = np.nonzero(s < expected)[0]
    if not below.size:
        return None
    at = int(steps[below[0]])
    return at if at - int(trace.loss_steps[0]) <= T.INITIAL_LOSS_RECOVERY * trace.n_steps \
        else None


# --- spikes -------------------------------------------------------------------------

_last_spikes: dict = {}


def loss_spikes(trace: Trace) -> np.ndarray:
    """Indices into ``trace.loss`` of the spikes (see :func:`find_spikes`), remembered
    for the last loss array seen: the detectors, the report and the figure all ask."""
    key = (id(trace.loss), trace.loss.size, bool(trace.meta.get("full_batch")))
    if key not in _last_spikes:
        _last_spikes.clear()
        _last_spikes[key] = (trace.loss, find_spikes(trace))  # the array keeps its id alive
    return _last_spikes[key][1]


def find_spikes(trace: Trace) -> np.ndarray:
    """Indices into ``trace.loss`` of the spikes.

    A spike is a step whose loss is ``SPIKE_FACTOR`` times the running median of
    the previous ``SPIKE_WINDOW`` steps and that falls back below ``1/SPIKE_FACTOR``
    of its peak within the next ``SPIKE_WINDOW`` steps (a transient, not a
    divergence). With minibatches, the loss of one batch is noisy, so it must also
    exceed the median by ``SPIKE_MAD`` robust standard deviations, undo
    ``SPIKE_UNDO`` of the progress made so far, and last: the median of the
    next ``SPIKE_WINDOW`` steps stays ``SPIKE_LASTING_MAD`` robust standard
    deviations above the median before it. A batch that happens to hold hard
    examples is followed by ordinary batches; a step that damaged the weights is
    not. Full-batch losses have no sampling noise.
    """
    loss = trace.loss
    w = T.SPIKE_WINDOW
    if loss.size <= w + 1:
        return np.zeros(0, dtype=np.int64)
    finite = np.where(np.isfinite(loss), loss, np.nan)
    if not np.isfinite(finite[:w]).any():
        return np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        windows = np.lib.stride_tricks.sliding_window_view(finite[:-1], w)  # (n - w, w)
        med = _row_medians(windows)
        x = finite[w:]
        ahead = np.lib.stride_tricks.sliding_window_view(
            np.concatenate([finite[w + 1:], np.full(w, np.nan)]), w)
        after = np.nanmin(ahead, axis=1)
        spike = (x > T.SPIKE_FACTOR * med) & (after < x / T.SPIKE_FACTOR)
        at = np.nonzero(spike)[0]
        if at.size and not trace.meta.get("full_batch"):
            at = at[_beyond_batch_noise(finite, windows[at], med[at], x[at], ahead[at], at)]
    return at + w


def _row_medians(a: np.ndarray) -> np.ndarray:
    """Median of each row, ignoring NaN (NumPy's nanmedian only where a row holds one)."""
    bad = np.isnan(a).any(axis=1)
    out = np.empty(a.shape[0])
    out[~bad] = np.median(a[~bad], axis=1)
    if bad.any():
        out[bad] = np.nanmedian(a[bad], axis=1)
    return out


def _beyond_batch_noise(finite, windows, med, x, ahead, at):
    """Minibatch spikes must stand out of the batch-to-batch spread, undo progress and
    last beyond the spiking batch. Every argument is for the candidate steps ``at``."""
    w = T.SPIKE_WINDOW
    mad = _row_medians(np.abs(windows - med[:, None])) * 1.4826
    start = float(np.nanmax(finite[:w]))
    best_so_far = np.fmin.accumulate(np.where(np.isfinite(finite), finite, np.inf))
    progress = np.maximum(start - best_so_far[w - 1:-1][at], 0.0)
    lasting = _row_medians(ahead) > med + T.SPIKE_LASTING_MAD * mad
    return (x > med + T.SPIKE_MAD * mad) & (x - med > T.SPIKE_UNDO * progress) & lasting


def _epoch_effect(trace: Trace, steps) -> bool:
    """Whether the epoch loss or the validation loss rose by ``SPIKE_EPOCH_RISE`` in an
    epoch holding one of ``steps`` (always True for full-batch runs: a step is an epoch)."""
    per_epoch = int(trace.meta.get("steps_per_epoch") or 0)
    logs = trace.epochs
    if trace.meta.get("full_batch") or per_epoch <= 0 or len(logs) < 2:
        return True
    first_step = int(trace.loss_steps[0])
    spiky = {(int(s) - first_step) // per_epoch for s in steps}
    for key in ("loss", "val_loss"):
        values = [e.get(key) for e in logs]
        for i in range(1, len(values)):
            before, now = values[i - 1], values[i]
            if i in spiky and before is not None and now is not None and (
                    now > (1 + T.SPIKE_EPOCH_RISE) * before):
                return True
    return False


def spike_events(spikes: np.ndarray) -> np.ndarray:
    """The first index of each run of spiking steps (steps at most 2 apart form one spike)."""
    return spikes[np.concatenate([[True], np.diff(spikes) > 2])] if spikes.size else spikes


def detect_spikes(trace: Trace) -> list[Finding]:
    spikes = loss_spikes(trace)
    events = spike_events(spikes)
    rate = events.size / max(1, trace.n_steps)
    if events.size < T.SPIKE_MIN_COUNT or rate < T.SPIKE_MIN_RATE:
        return []
    steps = trace.loss_steps[events]
    big = float(np.max(trace.loss[spikes]))
    late = bool(np.any(events >= 0.75 * trace.n_steps))
    settled = loss_summary(trace)["progress"] >= T.UNIT_PROGRESS and not late
    felt = _epoch_effect(trace, steps)
    note = "" if felt else "; the epoch and validation losses kept falling through them"
    return [Finding(
        "loss-spikes", "info" if settled or not felt else "warning",
        f"{events.size} loss spikes (up to {big:.4g}), first at step {int(steps[0])}{note}",
        "Single steps that throw away a good part of the progress: the step size is too "
        "large for the sharpest direction of the loss surface (common with full-batch "
        "gradient descent at a high learning rate).",
        f"Lower the learning rate ({lr_flag(trace, 0.3)}), use momentum or Adam "
        "(--optimizer adam), use minibatches (--batch-size 64), or clip gradients "
        "(--clip-norm 1.0).",
        steps=[int(s) for s in steps[:20]],
        evidence={"spikes": int(events.size), "spiking_steps": int(spikes.size),
                  "largest": big, "rate": rate},
        action=lr_action(trace, 0.3))]


# --- oscillation and plateau ----------------------------------------------------------

def detect_oscillation(trace: Trace) -> list[Finding]:
    steps, s = smoothed_loss(trace)
    start = loss_summary(trace)["initial"]
    if s.size < 2 * T.OSCILLATION_MIN_MOVES or not start > 0:
        return []
    half = s[s.size // 2:]
    d = np.diff(half)
    frac = float(np.mean(d > T.OSCILLATION_STEP * start))
    frac_down = float(np.mean(d < -T.OSCILLATION_STEP * start))
    net = (half[0] - half[-1]) / start
    if min(frac, frac_down) < T.OSCILLATION_FRACTION:
        return []
    return [Finding(
        "loss-oscillation", "warning",
        f"the loss went up in {100 * frac:.0f}% and down in {100 * frac_down:.0f}% of "
        f"the moves in the second half of training (net change {100 * -net:+.1f}% of "
        "the initial loss)",
        "The optimizer bounces across a valley instead of descending it: the learning "
        "rate is too high for this curvature.",
        f"Lower the learning rate ({lr_flag(trace, 0.3)}) or use momentum/Adam "
        "(--optimizer adam).",
        steps=[int(steps[s.size // 2])],
        evidence={"up_fraction": frac, "down_fraction": frac_down, "net_decrease": net},
        action=lr_action(trace, 0.3))]


def detect_plateau(trace: Trace) -> list[Finding]:
    steps, s = smoothed_loss(trace)
    summary = loss_summary(trace)
    start = summary["initial"]
    if s.size < 4 or trace.n_steps < T.PLATEAU_MIN_STEPS or not start > 0:
        return []
    mid, end = float(s[s.size // 2]), float(s[-1])
    change = abs(mid - end) / max(abs(mid), 1e-12)
    expected = trace.meta.get("expected_initial_loss")
    # "still high" against an uninformed model when its loss is known: a run that started
    # below it (a lucky or a good initialisation) and settled far below it has converged
    high = T.PLATEAU_LOSS_FRACTION * (expected or summary["reference"])
    if change >= T.PLATEAU_CHANGE or end <= high:
        return []
    prior = ""
    if expected and abs(end - expected) < 0.05 * expected:
        prior = (f" - that is the loss of predicting the class frequencies "
                 f"({expected:.3g}); the model has learned nothing from the inputs")
    first = float(trace.loss[0]) if np.isfinite(trace.loss[0]) else start
    return [Finding(
        "loss-plateau", "warning",
        f"the loss is stuck at {end:.4g} ({100 * end / first:.0f}% of where it "
        f"started) over the last {trace.n_steps - int(steps[s.size // 2])} steps" + prior,
        "Learning has stopped while the loss is still high: no useful gradient "
        "reaches the weights (vanishing or zero gradients, saturation, dead units) "
        "or the learning rate is far off.",
        "See the other findings for the cause; the usual fix is ReLU hidden layers "
        "with init='auto' and Adam (--activation relu --optimizer adam).",
        steps=[int(steps[s.size // 2])],
        evidence={"loss": end, "initial": start, "change": change})]


def detect_loss_curve(trace: Trace) -> list[Finding]:
    """Spikes, oscillation and plateau."""
    return detect_spikes(trace) + detect_oscillation(trace) + detect_plateau(trace)
