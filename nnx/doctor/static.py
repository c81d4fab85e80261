"""Checks before training: the model, the loss and the data, on the host.

:func:`check` runs them all; :func:`check_model` (in :mod:`.model_checks`, with the
symmetry and derivative checks) and :func:`check_data` can be called on their
own. They read the weights and the data once (host copies), never during
training.
"""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np

from ..data.checks import check_labels, find_duplicates
from ..errors import DataError
from ..losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy, get_loss
from . import findings as T
from .findings import Finding
from .model_checks import (
    check_derivatives,
    check_model,
    check_symmetry,
    findings_from_gradcheck,
    output_activation,
    to_host,
)

__all__ = ["check", "check_model", "check_data", "check_symmetry", "check_derivatives",
           "findings_from_gradcheck", "duplicate_rows", "to_host", "clear_data_checks"]


def check(model, loss, x=None, y=None, *, validation_data=None, test_data=None,
          gradcheck: bool | str = "auto") -> list[Finding]:
    """Every check that can run before training.

    Parameters
    ----------
    model : an initialised Sequential.
    loss : a loss name or object.
    x, y : training inputs ``(n, n_in)`` and labels/targets (host or device arrays).
    validation_data, test_data : ``(x, y)`` pairs compared with the training set
        for leakage.
    gradcheck : ``"auto"`` runs :func:`nnx.gradcheck` on a few rows when the model
        has custom activations or layers and at most ``GRADCHECK_MAX_PARAMS``
        parameters; ``True`` always, ``False`` never.
    """
    loss = get_loss(loss)
    out = check_model(model, loss, y=y)
    out += check_derivatives(model, loss, x, y, gradcheck=gradcheck)
    if x is not None:
        others = [("validation", validation_data), ("test", test_data)]
        out += check_data(model, loss, x, y, others=[(n, d) for n, d in others if d is not None])
    return out


# --- the data ---------------------------------------------------------------------

#: the input checks read about this many values: evenly spaced rows, at least
#: ``SAMPLE_MIN_ROWS`` of them for the feature ranges, and at most this many values of
#: those for the 99.9th percentile (percentiles and feature ranges of raw pixels or of
#: mixed units are off by orders of magnitude, far more than a sample's error)
SAMPLE_VALUES = 2 ** 17
SAMPLE_MIN_ROWS = 512


def _sample_rows(x: np.ndarray) -> np.ndarray:
    """Evenly spaced rows of ``x`` holding about ``SAMPLE_VALUES`` values."""
    per_row = max(1, int(np.prod(x.shape[1:])))
    limit = max(SAMPLE_MIN_ROWS, SAMPLE_VALUES // per_row)
    if x.shape[0] <= limit:
        return x
    idx = np.linspace(0, x.shape[0] - 1, limit).astype(np.int64)
    return x[idx]


#: data checks remembered (the last few data sets), so that a second fit on the same data
#: (an experiment loop, or the doctor verifying a fix) does not hash and scan it again
_CACHE: dict = {}
_CACHE_SIZE = 8


def clear_data_checks() -> None:
    """Forget the remembered data checks: the next :func:`check_data` reads its data again
    (as in a new process)."""
    _CACHE.clear()


def _fingerprint(a) -> tuple:
    """Identity, shape and a hash of up to 64 evenly spaced rows of ``a`` (host or device):
    equal for the same unchanged array, different after an in-place edit of those rows."""
    if a is None:
        return (None,)
    rows = getattr(a, "shape", (0,))[0] if getattr(a, "ndim", 0) else 0
    idx = np.unique(np.linspace(0, max(rows - 1, 0), 64).astype(np.int64)) if rows else []
    sample = np.ascontiguousarray(np.asarray(a)[idx]) if rows else np.asarray(a)
    return (id(a), tuple(a.shape), str(a.dtype),
            hashlib.blake2b(sample.tobytes(), digest_size=16).hexdigest())


def check_data(model, loss, x, y=None, *, others=()) -> list[Finding]:
    """Input scaling, labels, class balance, bounded regression outputs and leakage.

    ``others`` is ``[(name, (x, y)), ...]`` of held-out sets compared with ``x``.
    Host data is checked once: the findings are remembered per data set and model
    output (copies are returned, since a report may change a finding's severity).
    """
    loss = get_loss(loss)
    host = all(isinstance(a, np.ndarray) for a in (x, y) if a is not None)
    key = None
    if host:
        act = output_activation(model)
        key = (_fingerprint(x), _fingerprint(y), loss.name, model.n_out,
               getattr(act, "name", repr(act)),
               tuple((name, _fingerprint(d[0])) for name, d in others))
        if key in _CACHE:
            return copy.deepcopy(_CACHE[key])
    out = _data_findings(model, loss, x, y, others)
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = copy.deepcopy(out)
    return out


def _data_findings(model, loss, x, y, others) -> list[Finding]:
    xh = to_host(model, x)
    yh = to_host(model, y)
    out = _check_inputs(xh)
    if yh is not None:
        out += _check_labels(model, loss, yh)
    for name, data in others:
        out += _check_leakage(xh, to_host(model, data[0]), name)
    return out


_STANDARDISE = ("Standardise each feature with statistics of the training set (--standardize; "
                "in Python: m, s = x_train.mean(0), x_train.std(0) + 1e-8, then x = (x - m) / s "
                "for every set)")


def _check_inputs(x: np.ndarray) -> list[Finding]:
    out = []
    xs = np.asarray(_sample_rows(x), dtype=np.float64)
    if xs.size == 0 or not np.isfinite(xs).all():
        return out
    flat = xs.reshape(-1)  # the percentile (a partial sort) of at most SAMPLE_VALUES values
    q = float(np.percentile(np.abs(flat[::-(-flat.size // SAMPLE_VALUES)]), 99.9))
    mean, std = float(xs.mean()), float(xs.std())
    lo, hi = float(xs.min()), float(xs.max())
    if q > T.UNSCALED_MAX or abs(mean) > T.UNSCALED_MOMENT or std > T.UNSCALED_MOMENT:
        pixels = lo >= 0 and 100 < hi <= 255
        fix = ("Scale pixels to [0, 1]: x = x / 255.0 for the training and the test set, or "
               "--standardize" if pixels else _STANDARDISE)
        out.append(Finding(
            "unscaled-inputs", "warning",
            f"inputs are not scaled: values from {lo:.4g} to {hi:.4g} (mean {mean:.3g}, "
            f"std {std:.3g})" + (" - raw 0-255 pixels?" if pixels else ""),
            "Large inputs make the first layer's pre-activations huge: sigmoid/tanh units "
            "saturate, ReLU units die and the loss starts far too high; the learning rate "
            "that suits one feature is wrong for another.",
            fix, layers=[],
            evidence={"min": lo, "max": hi, "mean": mean, "std": std, "abs_p99_9": q},
            action={"standardize": True}))
    if xs.ndim == 2 and xs.shape[1] >= 2:
        ranges = xs.max(axis=0) - xs.min(axis=0)
        ranges = ranges[ranges > 0]
        if ranges.size >= 2:
            p5, p95 = np.percentile(ranges, [5, 95])
            spread = float(p95 / p5) if p5 > 0 else math.inf
            if spread > T.FEATURE_SPREAD:
                out.append(Finding(
                    "feature-scale-spread", "warning",
                    f"features on very different scales: the widest feature ranges are "
                    f"{spread:.3g}x the narrowest (ranges {p5:.3g} to {p95:.3g})",
                    "Gradient descent takes steps of the same size in every direction, so "
                    "with features in different units the large ones dominate and the small "
                    "ones barely learn.",
                    _STANDARDISE,
                    evidence={"spread": spread, "range_p5": float(p5),
                              "range_p95": float(p95)}, action={"standardize": True}))
    return out


def _check_labels(model, loss, y: np.ndarray) -> list[Finding]:
    """The labels by :func:`nnx.data.check_labels`' rules (the ones the Trainer enforces),
    then what those rules allow but a diagnosis flags: a many-class target for binary
    cross-entropy, class imbalance, outputs no label uses, a bounded regression output."""
    last = [la.name for la in model.layers if "w" in la.params][-1:]
    if isinstance(loss, MeanSquaredError):
        return _bounded_output(model, y, last)
    if loss.task != "classification":
        return []
    n_out = model.n_out
    if isinstance(loss, SigmoidBinaryCrossEntropy):
        many = _many_classes(y, n_out, last)
        if many:
            return many
    try:
        labels, _ = check_labels(y, "y", loss=loss, n_out=n_out)
    except DataError as exc:
        return [_unreadable_labels(exc, y, loss, n_out, last)]
    return _label_balance(labels, loss, n_out, last)


def _unreadable_labels(exc: DataError, y, loss, n_out, last) -> Finding:
    y = np.asarray(y)
    yf = y.astype(np.float64) if y.dtype.kind in "biuf" else np.zeros(0)
    finite = yf[np.isfinite(yf)]
    span = {"min": float(finite.min()), "max": float(finite.max())} if finite.size else {}
    return Finding(
        "labels-out-of-range", "error", " ".join(str(exc).split()),
        "Each label picks one output unit (for binary cross-entropy, it is a target "
        "probability); a label the loss cannot read gives a wrong loss and gradient, or "
        "an error when training starts.",
        "Pass class indices 0..C-1 for C outputs (or one-hot rows), 0/1 targets for "
        "binary cross-entropy; for a real-valued target use loss='mse'.",
        layers=last, evidence={**span, "outputs": n_out, "loss": loss.name})


def _label_balance(labels: np.ndarray, loss, n_out, last) -> list[Finding]:
    """Class imbalance, and outputs no label uses, of checked labels or probability rows."""
    if labels.ndim != 1:  # probability rows: balance by the most likely class
        if isinstance(loss, SigmoidBinaryCrossEntropy) and labels.shape[1] > 1:
            return []  # several yes/no targets per row: no single class to count
        labels = np.argmax(labels, axis=1) if labels.shape[1] > 1 else \
            (labels[:, 0] > 0.5).astype(np.int64)
    counts = np.bincount(labels, minlength=max(n_out or 0, 2 if n_out == 1 else 0))
    out = _imbalance(counts)
    hi = int(labels.max())
    if isinstance(loss, SoftmaxCrossEntropy) and n_out is not None and n_out > max(hi + 1, 2):
        out.append(Finding(
            "output-loss-mismatch", "info",
            f"the model has {n_out} outputs but the labels use only classes 0..{hi}",
            "Outputs for classes that never occur waste capacity and skew the initial "
            "loss check.",
            f"Give the model {hi + 1} outputs.", layers=last,
            evidence={"outputs": n_out, "max_label": hi}))
    return out


def _many_classes(y, n_out, last) -> list[Finding]:
    """Binary cross-entropy given labels of more than two classes, one column."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "biuf" or not y.size:
        return []
    values = np.unique(y[:10000].astype(np.float64))
    if values.size <= 2 or not np.all(np.isfinite(values) & (values == np.round(values))):
        return []
    return [Finding(
        "output-loss-mismatch", "error",
        f"sigmoid binary cross-entropy with a {values.size}-class target",
        "Binary cross-entropy treats every output as an independent yes/no "
        "probability; it cannot express one class out of many.",
        "Use softmax cross-entropy (loss='cross_entropy', --loss cross_entropy) with "
        f"{values.size} outputs.", layers=last,
        evidence={"classes": int(values.size), "outputs": n_out})]


def _bounded_output(model, y, last) -> list[Finding]:
    act = output_activation(model)
    bounds = getattr(act, "output_range", None)
    if bounds is None or not (math.isfinite(bounds[0]) or math.isfinite(bounds[1])):
        return []
    yf = np.asarray(y, dtype=np.float64)
    outside = float(np.mean((yf < bounds[0]) | (yf > bounds[1])))
    if outside == 0:
        return []
    return [Finding(
        "bounded-regression-output", "error",
        f"the output layer ends with {act.name} (range {bounds[0]:g} to "
        f"{bounds[1]:g}) but {100 * outside:.1f}% of the regression targets lie "
        f"outside it (targets from {yf.min():.4g} to {yf.max():.4g})",
        "A bounded output can never reach those targets, so their error never "
        "goes away, and the units saturate trying.",
        "Leave the regression output linear (mlp(sizes, output=None)), or scale "
        "the targets into the output's range.", layers=last,
        evidence={"outside_fraction": outside, "low": bounds[0], "high": bounds[1]})]


def _imbalance(counts: np.ndarray) -> list[Finding]:
    if counts.size < 2 or counts.sum() == 0:
        return []
    missing = np.nonzero(counts == 0)[0]
    present = counts[counts > 0]
    ratio = float(present.max() / present.min())
    if ratio < T.IMBALANCE_RATIO and not missing.size:
        return []
    big, small = int(np.argmax(counts)), int(np.argmin(np.where(counts > 0, counts,
                                                                 counts.max() + 1)))
    title = (f"class {big} has {ratio:.3g}x the examples of class {small} "
             f"({int(counts[big])} vs {int(counts[small])})")
    if missing.size:
        title += f"; class{'es' if missing.size > 1 else ''} " \
                 f"{', '.join(map(str, missing[:10]))} never appear"
    return [Finding(
        "class-imbalance", "warning", title,
        "With a rare class, predicting the common one is already right most of the time, so "
        "the loss gives the rare class little weight and accuracy hides the failure.",
        "Rebalance (oversample the rare class or undersample the common one), or weight the "
        "loss per class, and judge the model by per-class recall, not accuracy.",
        evidence={"counts": [int(c) for c in counts[:50]], "ratio": ratio,
                  "majority_share": float(counts.max() / counts.sum())})]


def duplicate_rows(a, b) -> np.ndarray:
    """Boolean mask over the rows of ``b`` (n_b, ...) that equal some row of ``a`` exactly.

    Found by :func:`nnx.data.find_duplicates` (compared in a common dtype, -0.0
    equal to 0.0); rows of another width than ``a``'s match nothing.
    """
    a, b = np.asarray(a), np.asarray(b)
    mask = np.zeros(b.shape[0] if b.ndim else 0, dtype=bool)
    if a.ndim == 0 or b.ndim == 0 or a.size == 0 or b.size == 0 \
            or a.size // a.shape[0] != b.size // b.shape[0]:
        return mask
    found = find_duplicates(a, b, max_examples=b.shape[0])
    mask[found.examples[:, 1]] = True
    return mask


def _check_leakage(x_train: np.ndarray, x_other: np.ndarray | None, name: str) -> list[Finding]:
    if x_other is None or x_other.shape[0] == 0:
        return []
    count = int(np.count_nonzero(duplicate_rows(x_train, x_other)))
    frac = count / x_other.shape[0]
    if count == 0:
        return []
    return [Finding(
        "train-test-leakage", "warning" if frac >= T.LEAKAGE_FRACTION else "info",
        f"{count} of the {x_other.shape[0]} {name} examples ({100 * frac:.1f}%) also appear in "
        "the training set",
        f"Examples seen in training are scored as if they were new, so the {name} accuracy "
        "overstates how well the model generalises (it can simply remember them).",
        "Deduplicate before splitting, or drop the copies from the held-out set: "
        "m = nnx.doctor.duplicate_rows(x_train, x_held_out); "
        "x_held_out, y_held_out = x_held_out[~m], y_held_out[~m].",
        evidence={"duplicates": count, "rows": int(x_other.shape[0]), "fraction": frac})]
