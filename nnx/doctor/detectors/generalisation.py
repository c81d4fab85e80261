"""Detectors on the epoch logs: overfitting, and a model that predicts the majority class.

They read ``trace.epochs`` (the trainer's logs: ``loss``, ``accuracy``,
``val_loss``, ``val_accuracy``, ...).
"""

from __future__ import annotations

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace

__all__ = ["detect_overfitting", "detect_majority_class"]


def _overfit_curves(trace: Trace):
    """``(epoch logs, validation losses, training losses)`` or None when too short."""
    logs = [e for e in trace.epochs if e.get("val_loss") is not None]
    if len(logs) < T.OVERFIT_PATIENCE + 2:
        return None
    val = np.array([e["val_loss"] for e in logs], dtype=np.float64)
    train = np.array([e.get("loss", np.nan) for e in logs], dtype=np.float64)
    if not np.isfinite(val).all():
        return None
    return logs, val, train


def _rising_validation(val, train) -> tuple[bool, int, float]:
    """``(overfitting by the loss, best epoch index, rise above the best)``."""
    best = int(np.argmin(val))
    rise = (val[-1] - val[best]) / max(val[best], 1e-12)
    train_falls = bool(np.isfinite(train[[best, -1]]).all() and train[-1] < train[best])
    gap_grows = (val[-1] - train[-1]) > (val[best] - train[best])
    by_loss = (rise > T.OVERFIT_RISE and len(val) - 1 - best >= T.OVERFIT_PATIENCE
               and train_falls and gap_grows)
    return by_loss, best, rise


def detect_overfitting(trace: Trace) -> list[Finding]:
    curves = _overfit_curves(trace)
    if curves is None:
        return []
    logs, val, train = curves
    by_loss, best, rise = _rising_validation(val, train)
    acc, val_acc = logs[-1].get("accuracy"), logs[-1].get("val_accuracy")
    acc_gap = (acc - val_acc) if acc is not None and val_acc is not None else None
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
                  "relative_gap": rel_gap, "accuracy_gap": acc_gap},
        action={"early_stopping": T.OVERFIT_PATIENCE})]


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
