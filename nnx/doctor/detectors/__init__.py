"""Detectors that read a training :class:`~nnx.doctor.trace.Trace` and return findings.

One module per family: :mod:`.gradients` (non-finite, exploding, vanishing,
tiny and zero gradients, stalled weights), :mod:`.loss_curve` (initial loss,
spikes, oscillation, plateau), :mod:`.units` (dead and saturated units),
:mod:`.budget` (under-training, a collapsing schedule, over-regularisation),
:mod:`.generalisation` (overfitting, majority class, baselines) and
:mod:`.learning_rate`; the learning-rate and baseline detectors run last because
they read the others' findings, and :func:`.outcome.judge` then lowers causes
without symptoms and explained symptoms to notes. Each ``detect_*``
function takes the trace and returns a list of
:class:`~nnx.doctor.findings.Finding`; :func:`run_detectors` runs them all.
Thresholds come from :mod:`nnx.doctor.findings`. Everything here is NumPy on
the host, run once at the end of training (or on demand).
"""

from __future__ import annotations

import warnings

from ..findings import Finding
from ..trace import Trace
from .budget import detect_over_regularised, detect_schedule_collapse, detect_under_training
from .common import smoothed_loss
from .generalisation import detect_baseline, detect_majority_class, detect_overfitting
from .gradients import (
    detect_exploding,
    detect_non_finite,
    detect_tiny,
    detect_vanishing,
    detect_zero_and_stalled,
)
from .learning_rate import detect_learning_rate
from .loss_curve import detect_initial_loss, detect_loss_curve, loss_spikes, spike_events
from .outcome import judge
from .units import detect_units

__all__ = ["run_detectors", "loss_spikes", "spike_events", "smoothed_loss", "DETECTORS",
           "judge"]

#: the detectors in the order they run (the learning-rate one runs last: it reads the others)
DETECTORS = [detect_non_finite, detect_exploding, detect_vanishing, detect_tiny,
             detect_zero_and_stalled, detect_initial_loss, detect_loss_curve, detect_units,
             detect_overfitting, detect_majority_class, detect_under_training,
             detect_schedule_collapse, detect_over_regularised]


def run_detectors(trace: Trace, known: list[Finding] = ()) -> list[Finding]:
    """Run every detector on ``trace``; ``known`` are earlier (static) findings.

    Once a value is non-finite, everything after it is NaN, so the other
    detectors only read what came before the first non-finite step. The
    severities of the new findings and of ``known`` are then judged together
    (:func:`~nnx.doctor.detectors.outcome.judge`; ``known`` is changed in place).
    """
    found = detect_non_finite(trace)
    clean = trace.until(min(found[0].steps)) if found else trace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for detect in DETECTORS:
            if detect is not detect_non_finite:
                found.extend(detect(clean))
        found.extend(detect_learning_rate(clean, list(known) + found))
        found.extend(detect_baseline(clean, list(known) + found))
    judge(list(known) + found, clean)
    return found
