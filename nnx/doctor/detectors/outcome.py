"""Severity by outcome: a cause without a symptom is a note, and a symptom explained by
another finding points there instead of sending the user after a second fix.

The doctor's severity rule (see :mod:`nnx.doctor.findings`): ``warning`` needs a
symptom and its cause; ``info`` is a cause seen while training still worked.
:func:`judge` applies it to the findings of a whole run, the static ones too.
"""

from __future__ import annotations

import math

from .. import findings as T
from ..findings import Finding
from ..trace import Trace
from .common import loss_summary

__all__ = ["judge", "trained_well"]

#: causes that are only notes once the run trained well (no symptom)
_CAUSES = {"initial-loss-off", "unscaled-inputs", "feature-scale-spread", "vanishing-gradients",
           "tiny-gradients", "vanishing-activations", "exploding-gradients", "lr-too-low"}

#: (explaining finding, findings it explains): the second ones become notes
_EXPLAINS = (
    ("symmetric-units", {"dead-relu", "stalled-weights", "vanishing-activations"}),
    ("vanishing-activations", {"vanishing-gradients", "tiny-gradients", "exploding-gradients"}),
    ("dead-relu", {"vanishing-activations", "zero-gradients", "stalled-weights",
                   "tiny-gradients"}),
    ("lr-schedule-collapse", {"stalled-weights", "tiny-gradients", "lr-too-low",
                              "under-training", "loss-plateau"}),
    ("over-regularised", {"lr-too-high", "loss-plateau", "under-training"}),
    ("lr-too-low", {"under-training"}),
    ("below-baseline", {"loss-spikes", "loss-oscillation"}),
)


def trained_well(trace: Trace) -> bool:
    """The run shows no training symptom: near-perfect training accuracy, or (without an
    accuracy) ``UNIT_PROGRESS`` of the way down from an uninformed model."""
    if trace is None or trace.n_steps == 0 or not trace.epochs:
        return False
    last = trace.epochs[-1]
    acc = last.get("accuracy")
    if acc is not None:
        return acc >= T.TRAINED_ACCURACY
    var, mse = trace.meta.get("target_var"), last.get("mse")
    if var and mse is not None and math.isfinite(mse):
        return mse <= (1 - T.UNIT_PROGRESS) * var
    return loss_summary(trace)["progress"] >= T.UNIT_PROGRESS


def _demote(f: Finding, note: str) -> None:
    f.severity = "info"
    f.title += f" ({note})"


def judge(findings: list[Finding], trace: Trace | None) -> list[Finding]:
    """Lower, in place, the severity of causes without symptoms and of explained symptoms.

    Errors stay errors except where another finding explains them. Returns ``findings``.
    """
    if trace is not None and trace.n_steps and trained_well(trace):
        for f in findings:
            if f.id in _CAUSES and f.severity == "warning":
                _demote(f, _well_note(trace))
    for cause, explained in _EXPLAINS:  # in order: an explained cause explains nothing
        if not any(f.id == cause and f.severity != "info" for f in findings):
            continue
        for f in findings:
            if f.id in explained and f.severity != "info" and f.id != cause:
                _demote(f, f"explained by {cause}")
    return findings


def _well_note(trace: Trace) -> str:
    acc = trace.epochs[-1].get("accuracy")
    if acc is not None:
        return f"training still reached {100 * acc:.1f}% accuracy"
    return "training still converged"
