"""Detectors on the epoch logs: overfitting, a model that predicts the majority class, and
models no better than one that ignores its inputs.

They read ``trace.epochs`` (the trainer's logs: ``loss``, ``accuracy``,
``val_loss``, ``val_accuracy``, ...).
"""

from __future__ import annotations

import math

import numpy as np

from .. import findings as T
from ..findings import Finding
from ..trace import Trace

__all__ = ["detect_overfitting", "detect_majority_class", "detect_baseline"]


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


def _overfit_title(by_loss, rise, best_epoch, acc, val_acc, restored) -> str:
    parts = []
    if by_loss:
        parts.append(f"validation loss rose {100 * rise:.0f}% since its best at epoch "
                     f"{best_epoch} while the training loss kept falling")
    if acc is not None and val_acc is not None:
        parts.append(f"train accuracy {100 * acc:.1f}% vs validation {100 * val_acc:.1f}%")
    if restored:
        parts.append(f"early stopping restored the weights of epoch {best_epoch}, the best")
    return "; ".join(parts)


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
    epoch0 = logs[0].get("epoch", 0)
    restored = trace.meta.get("restored_epoch") == best + epoch0
    mild = (not by_loss or rel_gap < T.OVERFIT_GAP or restored
            or (acc_gap is not None and acc_gap < T.OVERFIT_ACCURACY_GAP / 2))
    return [Finding(
        "overfitting", "info" if mild else "warning",
        _overfit_title(by_loss, rise, best + epoch0, acc, val_acc, restored),
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


# --- baselines -----------------------------------------------------------------------

#: findings that already name why a model learned nothing (the baseline finding points there)
_CAUSES = ("derivative-mismatch", "symmetric-units", "zero-gradients", "stalled-weights",
           "vanishing-activations", "vanishing-gradients", "dead-relu", "saturated-units",
           "over-regularised", "lr-schedule-collapse", "lr-too-high", "lr-too-low",
           "under-training", "non-finite", "labels-out-of-range", "output-loss-mismatch")


def _named_causes(found) -> list[str]:
    ids = {f.id for f in found if f.severity != "info"}
    return [c for c in _CAUSES if c in ids]


def _classifier_baseline(trace: Trace, found) -> list[Finding]:
    share, n = trace.meta.get("majority_share"), trace.meta.get("n_train") or 0
    acc = trace.epochs[-1].get("accuracy")
    if share is None or acc is None or n <= 0:
        return []
    margin = max(T.BASELINE_ACCURACY_MARGIN, T.BASELINE_SIGMAS * math.sqrt(
        share * (1 - share) / n))
    if acc > share + margin or any(f.id == "class-imbalance" and "predicts that class"
                                   in f.title for f in found):
        return []
    causes = _named_causes(found)
    cause = ("See " + ", ".join(causes) + " for why." if causes else
             "No other finding explains it: check that the labels belong to the inputs "
             "(shuffled separately?), that the inputs carry the signal, and that the "
             "learning rate is not far off (--lr-find).")
    return [Finding(
        "below-baseline", "warning",
        f"training accuracy {100 * acc:.1f}% is no better than always answering the largest "
        f"class ({100 * share:.1f}%): the model has learned nothing from its inputs",
        "A classifier must beat the majority-class share before its accuracy means "
        "anything. " + cause,
        "Fix the cause the other findings name first" if causes else
        "Check the data pipeline, then find a learning rate with --lr-find.",
        evidence={"accuracy": acc, "majority_share": share, "margin": margin,
                  "causes": causes})]


def _regression_baseline(trace: Trace, found) -> list[Finding]:
    meta = trace.meta
    var = meta.get("target_var")
    last = trace.epochs[-1]
    mse = last.get("mse", last.get("loss") if meta.get("loss") == "mse" else None)
    if not var or mse is None or not math.isfinite(mse) or mse <= T.BASELINE_REGRESSION * var:
        return []
    std, mean = meta.get("target_std") or 0.0, meta.get("target_mean_abs") or 0.0
    unscaled = std > T.UNSCALED_TARGETS or mean > T.UNSCALED_TARGETS
    causes = _named_causes(found)
    if unscaled:
        cause = (f"The targets are not scaled (mean magnitude {mean:.3g}, std {std:.3g}): the "
                 "network starts near 0 and needs huge weights to reach them, so the first "
                 "steps are dominated by the output bias and a learning rate that suits the "
                 "hidden layers is far too small or far too large for it.")
        fix = ("Standardise the targets with training-set statistics (--standardize does it "
               "for the inputs and a regression target; in Python: m, s = y_train.mean(0), "
               "y_train.std(0); train on (y - m) / s and predict model_output * s + m).")
    else:
        cause = ("See " + ", ".join(causes) + " for why." if causes else
                 "No other finding explains it: check that the targets belong to the inputs "
                 "and that the learning rate is not far off (--lr-find).")
        fix = "Fix the cause the other findings name first." if causes else (
            "Check the data pipeline, then find a learning rate with --lr-find.")
    return [Finding(
        "below-baseline", "warning",
        f"training mean squared error {mse:.4g} is {mse / var:.2f}x the targets' variance "
        f"({var:.4g}), the error of always predicting their mean",
        "A regression must beat predicting the mean before its error means anything. " + cause,
        fix, evidence={"mse": mse, "target_var": var, "target_std": std,
                       "target_mean_abs": mean, "causes": causes},
        action={"standardize_targets": True} if unscaled else {})]


def detect_baseline(trace: Trace, found) -> list[Finding]:
    """No better than a model that ignores its inputs: the majority class, or the mean.

    ``found`` are the other detectors' findings: the one that explains it is named.
    """
    if not trace.epochs:
        return []
    if trace.meta.get("task") == "classification":
        return _classifier_baseline(trace, found)
    return _regression_baseline(trace, found)
