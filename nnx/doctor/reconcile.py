"""One recommendation from many findings: merge their fixes, settle conflicts by cause.

Each finding's fix is also a setting (``Finding.action``: ``{"lr": 0.01}``,
``{"init": "auto"}``...). Two findings may ask for the same setting with
different values (one run used to get both "--lr 0.1" and "--lr 10"): the
finding closer to the root cause wins, by severity and then by the order of
:data:`PRIORITY` (initialisation and scaling before the learning rate, a
collapsing schedule or a penalty before either). With verified fixes
(:mod:`nnx.doctor.verify`) the recommendation is the fix that did best.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .findings import severity_rank

__all__ = ["Recommendation", "recommend", "flags", "PRIORITY"]

#: finding ids from root cause to symptom: earlier ones win a conflict
PRIORITY = ("output-loss-mismatch", "symmetric-units", "zero-gradients", "unscaled-inputs",
            "feature-scale-spread", "below-baseline", "lr-schedule-collapse",
            "over-regularised", "vanishing-activations", "initial-loss-off",
            "exploding-gradients", "non-finite", "lr-too-high", "dead-relu",
            "saturated-units", "vanishing-gradients", "stalled-weights", "loss-spikes",
            "loss-oscillation", "lr-too-low", "under-training", "overfitting")

#: how each setting reads as a command-line flag (None: Python only)
_FLAGS = {"lr": "--lr {}", "init": "--init {}", "activation": "--activation {}",
          "standardize": "--standardize", "weight_decay": "--weight-decay {}",
          "l2": "--l2 {}", "clip_norm": "--clip-norm {}", "optimizer": "--optimizer {}",
          "early_stopping": "--early-stopping {}", "epochs": "--epochs {}",
          "output": None, "schedule": None, "standardize_targets": None}
_PYTHON = {"output": "a linear output layer (mlp(sizes, output=None))",
           "schedule": "the schedule per epoch (schedule(step // steps_per_epoch))",
           "standardize_targets": "standardised targets (y = (y - y.mean(0)) / y.std(0))"}


def flags(action: dict) -> str:
    """``{"lr": 0.01, "init": "auto"}`` -> ``"--lr 0.01 --init auto"`` (Python-only settings
    in words)."""
    parts = []
    for key, value in action.items():
        form = _FLAGS.get(key)
        if form is not None:
            parts.append(form.format(f"{value:g}" if isinstance(value, float) else value))
        else:
            parts.append(_PYTHON.get(key, f"{key}={value!r}"))
    return " ".join(parts)


@dataclass
class Recommendation:
    """The one fix to try first.

    Attributes
    ----------
    action : the merged settings (``{"init": "auto", "lr": 0.01}``).
    sources : ids of the findings the settings came from.
    set_aside : ``[(finding id, setting, value)]`` conflicting settings that lost.
    verified : the :class:`~nnx.doctor.verify.Trial` that showed it helps, or None.
    """

    action: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)
    set_aside: list = field(default_factory=list)
    verified: object = None

    def __str__(self) -> str:
        text = f"recommended: {flags(self.action)}"
        if self.verified is not None:
            text += " (the tried fix that did best)"
        if self.set_aside:
            text += "; instead of " + ", ".join(
                f"{flags({k: v})} ({fid})" for fid, k, v in self.set_aside)
        return text

    def to_dict(self) -> dict:
        return {"action": self.action, "flags": flags(self.action), "sources": self.sources,
                "set_aside": [list(s) for s in self.set_aside],
                "verified": None if self.verified is None else self.verified.to_dict()}


def _rank(f) -> tuple:
    order = PRIORITY.index(f.id) if f.id in PRIORITY else len(PRIORITY)
    return (-severity_rank(f.severity), order)


def _merged(findings) -> Recommendation | None:
    actionable = sorted((f for f in findings if f.action and f.severity != "info"), key=_rank)
    if not actionable:
        return None
    rec = Recommendation()
    for f in actionable:
        took = False
        for key, value in f.action.items():
            if key not in rec.action:
                rec.action[key] = value
                took = True
            elif rec.action[key] != value:
                rec.set_aside.append((f.id, key, value))
        if took:
            rec.sources.append(f.id)
    return rec


def recommend(findings, trials=None) -> Recommendation | None:
    """The recommendation for ``findings``; with ``trials`` (verified fixes), the kept
    trial with the lowest loss, or None when no fix helped."""
    if trials:
        kept = [t for t in trials if t.kept]
        if not kept:
            return None
        best = min(kept, key=lambda t: t.loss)
        return Recommendation(dict(best.action), list(best.sources), [], best)
    return _merged(findings)
