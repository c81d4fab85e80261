"""Unit detectors: dead ReLU units and saturated sigmoid/tanh units, per layer.

They read the per-unit activity windows of the :class:`~nnx.doctor.trace.Trace`
(how many sampled examples had each unit active or saturated).
"""

from __future__ import annotations

import math

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace
from .common import loss_summary, lr_action, lr_flag, median

__all__ = ["detect_units", "detect_dead", "detect_saturated", "detect_vanishing_activations",
           "signal_stds"]

#: a window needs this many rows before its counts are read at all
_MIN_WINDOW_ROWS = min(T.DEAD_MIN_ROWS, 64)


def _dead_fraction(unit, active):
    """``(fraction, dead units)`` of the units of ``unit`` that can die and never fired."""
    dead = (active == 0) & unit.can_die
    return float(dead.sum() / unit.can_die.sum()), int(dead.sum())


def _saturated_fraction(unit, saturated, rows):
    """``(mean saturated fraction, units saturated on > 90% of rows)``."""
    per_unit = saturated[unit.saturates] / rows
    return float(per_unit.mean()), int((per_unit > 0.9).sum())


def _counts(window, kind: str, li: int):
    counts = window.active if kind == "dead" else window.saturated
    return counts[li] if li < len(counts) else None


def _layers_over(trace: Trace, window, kind: str) -> list:
    """``[(unit, fraction, units over, units), ...]`` of the layers past the threshold."""
    out = []
    for li, unit in enumerate(trace.layers):
        counts = _counts(window, kind, li)
        if kind == "dead" and counts is not None and unit.can_die.any():
            frac, k = _dead_fraction(unit, counts)
            if frac >= T.DEAD_FRACTION:
                out.append((unit, frac, k, int(unit.can_die.sum())))
        elif kind == "sat" and counts is not None and unit.saturates.any():
            frac, k = _saturated_fraction(unit, counts, window.rows)
            if frac >= T.SATURATED_FRACTION:
                out.append((unit, frac, k, int(unit.saturates.sum())))
    return out


def _first_window_steps(trace: Trace, kind: str) -> dict:
    """First step at which each layer crossed the dead/saturated threshold (by window)."""
    first = {}
    for w in trace.windows:
        if w.rows < (_MIN_WINDOW_ROWS if kind == "dead" else 1):
            continue
        for unit, *_ in _layers_over(trace, w, kind):
            first.setdefault(unit.name, w.first_step)
    return first


def _unit_severity(fraction: float, threshold: float, error_from: float,
                   progress: float) -> str:
    """Error when most units are lost. Otherwise a warning only with a symptom: the loss
    far from done (``UNDERTRAINED_PROGRESS``), or half way from the threshold to the error
    fraction lost while the loss is still above ``UNIT_PROGRESS``; else a note."""
    if fraction >= error_from:
        return "error"
    if progress < T.UNDERTRAINED_PROGRESS:
        return "warning"
    many = fraction >= (threshold + error_from) / 2
    return "warning" if many and progress < T.UNIT_PROGRESS else "info"


def _over_threshold(trace: Trace, kind: str):
    """``(recent window, layers over the threshold, first step per layer, worst fraction)``,
    or None when no layer is over it."""
    window = trace.recent_windows(T.DEAD_MIN_ROWS)
    if window is None or window.rows < _MIN_WINDOW_ROWS:
        return None
    layers = _layers_over(trace, window, kind)
    last = trace.windows[-1]
    if kind == "dead" and not layers and last.rows >= _MIN_WINDOW_ROWS:
        # a short run whose units died late: its last window alone holds too few rows to
        # call one unit dead, but not to see most of a layer dead at once
        layers = [h for h in _layers_over(trace, last, kind) if h[1] >= T.DEAD_FRACTION_ERROR]
        window = last if layers else window
    if not layers:
        return None
    return window, layers, _first_window_steps(trace, kind), max(f for _, f, _, _ in layers)


def _silent(trace: Trace):
    """``(first step, last step, layers)`` of ReLU layers whose every output was exactly 0
    at each of the last ``ZERO_GRADIENT_SAMPLES`` sampled steps (their mean and spread are
    0): the whole layer is dead, however few rows a window holds."""
    k = T.ZERO_GRADIENT_SAMPLES
    if trace.sample_steps.size < k or not trace.act.size:
        return None
    tail = trace.act[-k:, :, 2:4]                       # (k, L, [a_mean, a_std])
    layers = [(u, 1.0, u.n, u.n) for li, u in enumerate(trace.layers)
              if u.can_die.all() and u.n and np.all(tail[:, li] == 0)]
    if not layers:
        return None
    return int(trace.sample_steps[-k]), int(trace.sample_steps[-1]), layers


def _dead_seen(trace: Trace):
    """``(where, layers, first step per layer, worst fraction, rows)`` of dead units."""
    seen = _over_threshold(trace, "dead")
    if seen is not None:
        window, layers, first, worst = seen
        return (f"never active over the last {window.rows} sampled examples (steps "
                f"{window.first_step}-{window.last_step})", layers, first, worst,
                window.rows, window.first_step)
    silent = _silent(trace)
    if silent is None:
        return None
    a, b, layers = silent
    return (f"outputting exactly 0 for every sampled example at the last "
            f"{T.ZERO_GRADIENT_SAMPLES} sampled steps ({a}-{b})", layers, {}, 1.0, 0, a)


def detect_dead(trace: Trace) -> list[Finding]:
    seen = _dead_seen(trace)
    if seen is None:
        return []
    where, layers, first, worst, rows, start = seen
    desc = "; ".join(f"{u.label}: {d} of {n} units ({100 * f:.0f}%)" for u, f, d, n in layers)
    return [Finding(
        "dead-relu",
        _unit_severity(worst, T.DEAD_FRACTION, T.DEAD_FRACTION_ERROR,
                       loss_summary(trace)["progress"]),
        f"dead ReLU units, {where}: {desc}",
        "A ReLU unit whose pre-activation is negative for every input outputs 0 and gets "
        "zero gradient, so it never recovers. Large updates (a high learning rate) or a "
        "large negative bias push units there.",
        f"Lower the learning rate ({lr_flag(trace, 0.1)}), use leaky ReLU "
        "(--activation leaky_relu) or ELU, and keep init='auto' (He).",
        layers=[u.owner for u, _, _, _ in layers],
        steps=[first.get(u.name, start) for u, _, _, _ in layers],
        evidence={u.owner: {"dead_fraction": f, "dead_units": d, "units": n}
                  for u, f, d, n in layers} | {"rows": rows},
        action=lr_action(trace, 0.1))]


def detect_saturated(trace: Trace) -> list[Finding]:
    seen = _over_threshold(trace, "sat")
    if seen is None:
        return []
    window, layers, first, worst = seen
    desc = "; ".join(f"{u.label}: {100 * f:.0f}% saturated, {k} of {n} units almost always"
                     for u, f, k, n in layers)
    return [Finding(
        "saturated-units",
        _unit_severity(worst, T.SATURATED_FRACTION, T.SATURATED_FRACTION_ERROR,
                       loss_summary(trace)["progress"]),
        f"saturated units over the last {window.rows} sampled examples: {desc}",
        "Sigmoid/tanh outputs pinned near their bounds have a derivative close to 0, so "
        "almost no gradient passes: pre-activations too large, from a high learning rate, "
        "unscaled inputs or large initial weights.",
        f"Lower the learning rate ({lr_flag(trace, 0.1)}), standardise the inputs, use "
        "init='auto' (Xavier for tanh/sigmoid), or switch to ReLU (--activation relu).",
        layers=[u.owner for u, _, _, _ in layers],
        steps=[first.get(u.name, window.first_step) for u, _, _, _ in layers],
        evidence={u.owner: {"saturated_fraction": f, "mostly_saturated_units": k,
                            "units": n} for u, f, k, n in layers} | {"rows": window.rows},
        action=lr_action(trace, 0.1))]


def detect_units(trace: Trace) -> list[Finding]:
    """Dead ReLU units and saturated sigmoid/tanh units, per layer, over recent windows, and
    a forward signal that dies with depth."""
    return detect_dead(trace) + detect_saturated(trace) + detect_vanishing_activations(trace)


# --- the forward signal -----------------------------------------------------------------

def signal_stds(trace: Trace, part: slice) -> list[float]:
    """Median standard deviation of each monitored layer's outputs over the samples ``part``.

    The std is over the batch and the layer's units together (``Trace.act`` column
    ``a_std``): how much the signal varies when it leaves the layer.
    """
    return [median(trace.act[part, li, 3]) for li in range(len(trace.layers))]


def detect_vanishing_activations(trace: Trace) -> list[Finding]:
    """The output std of the hidden layers falls by ``1/SIGNAL_SHRINK`` from the first one.

    With small initial weights every layer multiplies the signal by about
    ``std(w) * sqrt(fan_in)``; below 1 it shrinks geometrically with depth, the
    last layers output the same value for every input, and the gradients of all
    layers become uniformly tiny (so comparing them between layers sees nothing).
    Read at the first sampled step: the state the initialisation left.
    """
    s = trace.sample_steps.size
    if len(trace.layers) < 2 or s == 0:
        return []
    # the first step's forward pass, before any update: once the biases learn, units differ
    # by their offsets alone and the spread over units no longer measures the signal
    early = signal_stds(trace, slice(0, 1))
    first = early[0]
    if not (math.isfinite(first) and first > 0):
        return []
    low = [(u, v) for u, v in zip(trace.layers[1:], early[1:])
           if math.isfinite(v) and v < T.SIGNAL_SHRINK * first]
    if not low:
        return []
    last_std = signal_stds(trace, slice(s - max(1, s // 4), s))
    progress = loss_summary(trace)["progress"]
    worst = min(v for _, v in low)
    return [Finding(
        "vanishing-activations", "warning" if progress < T.UNDERTRAINED_PROGRESS else "info",
        f"the signal dies in the forward pass: the output std falls from {first:.2g} in "
        f"{trace.layers[0].label} to {worst:.2g} ({first / max(worst, 1e-300):.3g}x smaller) "
        f"by {low[-1][0].label}, so the last layers output nearly the same value for every "
        "input",
        "Each layer multiplies the spread of its inputs by about std(w) * sqrt(fan_in); with "
        "initial weights too small that factor is below 1, the signal shrinks geometrically "
        "with depth, and every layer's gradient becomes tiny together.",
        "Initialise for the activation: init='auto' (--init auto: Xavier for tanh/sigmoid, "
        "He for ReLU), or add batch normalisation (--batchnorm).",
        layers=[u.owner for u, _ in low], steps=[int(trace.sample_steps[0])],
        evidence={"output_std_first_layer": first,
                  "output_std": {u.owner: v for u, v in zip(trace.layers, early)},
                  "output_std_at_end": {u.owner: v for u, v in zip(trace.layers, last_std)},
                  "loss_progress": progress},
        action={"init": "auto"})]
