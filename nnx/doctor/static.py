"""Checks before training: the model, the loss and the data, on the host.

:func:`check` runs them all; :func:`check_model` and :func:`check_data` can be
called on their own. They read the weights and the data once (host copies),
never during training.
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import check_derivative
from ..data.checks import check_labels, find_duplicates
from ..errors import DataError, DerivativeMismatch
from ..layers import ActivationLayer, BatchNorm, MixedActivation
from ..losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy, get_loss
from . import findings as T
from .findings import Finding

__all__ = ["check", "check_model", "check_data", "check_symmetry", "check_derivatives",
           "findings_from_gradcheck", "duplicate_rows", "to_host"]


def to_host(model, a) -> np.ndarray | None:
    """A host NumPy copy of ``a`` (a device array of the model's backend, or host data)."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("numpy"):
        return np.asarray(a)
    return np.asarray(model.backend.to_numpy(a))


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


# --- the model and its loss ----------------------------------------------------

def _output_activation(model):
    """The activation applied after the last weight layer, or None (logits)."""
    for layer in reversed(model.layers):
        if isinstance(layer, ActivationLayer):
            return layer.activation if layer.activation.name != "identity" else None
        if isinstance(layer, MixedActivation):
            return layer
        if "w" in layer.params:
            return None
    return None


def _n_out(model) -> int | None:
    return model.n_out


def check_model(model, loss, *, y=None) -> list[Finding]:
    """Output layer vs loss, and symmetric units in the initial weights."""
    loss = get_loss(loss)
    out = []
    act = _output_activation(model)
    n_out = _n_out(model)
    last = [la.name for la in model.layers if "w" in la.params][-1:]
    if isinstance(loss, (SoftmaxCrossEntropy, SigmoidBinaryCrossEntropy)) and act is not None:
        name = getattr(act, "name", "mixed")
        implied = "softmax" if isinstance(loss, SoftmaxCrossEntropy) else "sigmoid"
        if name == "relu":
            cause = ("ReLU on the output clips every negative logit to 0, so the network "
                     "cannot express 'unlikely'; many examples get zero gradient.")
        elif name in ("sigmoid", "softmax") or "softmax" in name:
            cause = (f"The loss already applies {implied} to its input; a {name} before it "
                     f"applies it twice, squeezing the logits into a narrow range.")
        else:
            cause = (f"The loss takes raw logits and applies {implied} itself; a {name} "
                     "output bounds or distorts the logits.")
        out.append(Finding(
            "output-loss-mismatch", "error",
            f"the output layer ends with {name} before {loss.name}, which expects logits",
            cause,
            "Leave the output linear: mlp(sizes, output=None) (the default), or remove the "
            f"last ActivationLayer; {loss.name} applies {implied} itself.",
            layers=last, evidence={"output_activation": name, "loss": loss.name}))
    if isinstance(loss, SoftmaxCrossEntropy) and n_out == 1:
        out.append(Finding(
            "output-loss-mismatch", "error",
            "softmax cross-entropy on a single output: the softmax of one number is always "
            "1, so the loss is always 0 and nothing is learned",
            "A binary problem with one output unit needs a sigmoid, not a softmax.",
            "Use loss='bce' (sigmoid binary cross-entropy, --loss bce) with one output, or "
            "two outputs with cross-entropy.",
            layers=last, evidence={"outputs": 1}))
    out += check_symmetry(model)
    return out


def _unit_signatures(model, weights: dict, a: int, b: int):
    """``(n, n_units) array`` rows: each unit of dense layer ``a``'s incoming weights, bias,
    per-unit parameters up to dense layer ``b`` and outgoing weights; None if not aligned."""
    la = model.layers[a]
    w_in = weights[f"{la.name}.w"]                      # (n_in, n)
    n = w_in.shape[1]
    parts = [w_in.T]
    if f"{la.name}.b" in weights:
        parts.append(weights[f"{la.name}.b"][:, None])
    for mid in model.layers[a + 1:b]:                   # per-unit parameters in between
        if isinstance(mid, BatchNorm):
            parts += [weights[f"{mid.name}.gamma"][:, None], weights[f"{mid.name}.beta"][:, None]]
    w_out = weights[f"{model.layers[b].name}.w"]       # (n, n_next)
    if w_out.shape[0] != n:
        return None
    parts.append(w_out)
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1)


def _identical_rows(sig: np.ndarray) -> tuple[int, int]:
    """``(rows that equal another row, groups of equal rows)``.

    Rows are hashed exactly (a random linear hash of their 64-bit words in wrapping
    integer arithmetic, which is associative, so equal rows always get equal
    hashes); only rows with equal hashes are compared, so a large layer costs
    about one pass over its weights instead of a lexicographic sort.
    """
    words = np.ascontiguousarray(sig + 0.0).view(np.uint64)  # + 0.0: -0.0 equals 0.0
    mult = np.random.default_rng(12345).integers(1, 2**63, sig.shape[1], dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        key = (words * mult).sum(axis=1, dtype=np.uint64)
    order = np.argsort(key, kind="stable")
    k = key[order]
    same = np.nonzero(k[1:] == k[:-1])[0]
    if same.size == 0:
        return 0, 0
    candidates = np.unique(np.concatenate([order[same], order[same + 1]]))
    _, counts = np.unique(sig[candidates], axis=0, return_counts=True)
    return int(counts[counts > 1].sum()), int((counts > 1).sum())


def _symmetry_finding(model, a: int, b: int, copies: int, groups: int, n: int,
                      after_steps: int | None, zero: bool) -> Finding:
    la = model.layers[a]
    frac = copies / n
    when = "initial" if after_steps is None else f"after {after_steps} steps, the"
    return Finding(
        "symmetric-units", "error" if frac >= T.SYMMETRIC_FRACTION_ERROR else "warning",
        f"{when} weights of {la.name} make {copies} of its {n} units identical copies "
        f"({groups} group{'s' if groups > 1 else ''})"
        + (" - the weights are all zero" if zero else ""),
        "Units that start with the same incoming and outgoing weights compute the same "
        "output and get the same gradient, so they stay identical forever: the layer "
        "learns like a single unit. This comes from zero or constant initialisation.",
        "Initialise with random weights: init='auto' (He for ReLU, Xavier for tanh/"
        "sigmoid; --init auto), never zeros or a constant.",
        layers=[la.name] + ([model.layers[b].name] if frac == 1.0 else []),
        steps=[] if after_steps is None else [after_steps],
        evidence={"identical_units": copies, "units": n, "groups": groups, "all_zero": zero},
        action={"init": "auto"})


def check_symmetry(model, *, after_steps: int | None = None) -> list[Finding]:
    """Hidden units with identical incoming *and* outgoing weights (never break apart).

    Two units of a hidden layer that share their incoming weights, bias and
    outgoing weights get identical gradients, so plain gradient descent keeps them
    identical forever: the layer behaves like one unit. Zero or constant
    initialisation makes every unit of a layer such a copy.
    """
    weights = model.get_weights()
    dense = [i for i, la in enumerate(model.layers) if "w" in la.params
             and la.params["w"].ndim == 2]
    out = []
    for a, b in zip(dense, dense[1:]):
        sig = _unit_signatures(model, weights, a, b)
        if sig is None:
            continue
        copies, groups = _identical_rows(sig)
        if copies:
            zero = bool(np.all(weights[f"{model.layers[a].name}.w"] == 0))
            out.append(_symmetry_finding(model, a, b, copies, groups, sig.shape[0],
                                         after_steps, zero))
    return out


# --- derivatives --------------------------------------------------------------

def _is_builtin(act) -> bool:
    return getattr(act.forward, "__module__", "") == "nnx.activations"


def _activations_of(layer) -> list:
    if isinstance(layer, ActivationLayer):
        return [layer.activation]
    if isinstance(layer, MixedActivation):
        from ..activations import get_activation

        return [get_activation(s) for s in dict.fromkeys(layer.per_unit)]
    return []


def _check_custom_parts(layer, seen: set) -> tuple[bool, list[Finding]]:
    """``(has custom parts, findings)`` for the custom activations and layers of ``layer``."""
    custom, out = False, []
    for act in _activations_of(layer):
        if _is_builtin(act) or id(act) in seen:
            continue
        seen.add(id(act))
        custom = True
        try:
            check_derivative(act)
        except DerivativeMismatch as exc:
            out.append(_mismatch(exc, layer.name, f"activation {act.name!r}"))
    if not getattr(layer, "builtin", True):
        custom = True
        from ..gradcheck import check_layer

        try:
            check_layer(layer)
        except DerivativeMismatch as exc:
            out.append(_mismatch(exc, layer.name, f"layer {type(layer).__name__}"))
    return custom, out


def check_derivatives(model, loss=None, x=None, y=None, *,
                      gradcheck: bool | str = "auto") -> list[Finding]:
    """Check custom activations and layers, and (small models) the whole model's gradient."""
    out = []
    custom = False
    seen = set()
    for layer in model.layers:
        has_custom, found = _check_custom_parts(layer, seen)
        custom, out = custom or has_custom, out + found
    n_params = sum(int(np.prod(p.shape)) for la in model.layers for p in la.params.values())
    run = gradcheck is True or (gradcheck == "auto" and custom and not out
                                and n_params <= T.GRADCHECK_MAX_PARAMS)
    if run and x is not None and y is not None and loss is not None:
        from ..gradcheck import gradcheck as whole

        xs, ys = to_host(model, x)[:8], to_host(model, y)[:8]
        out += findings_from_gradcheck(whole(model, loss, xs, ys))
    return out


def _mismatch(exc: DerivativeMismatch, layer: str, what: str) -> Finding:
    return Finding(
        "derivative-mismatch", "error",
        f"the derivative of {what} disagrees with its forward",
        str(exc),
        "Fix the derivative so it is d(forward)/dz, taking z (the pre-activation) or a (the "
        "output) by name as the formula needs; define it with nnx.define_activation(name, "
        "forward, derivative), which checks it, and run nnx.gradcheck(model, loss, x, y).",
        layers=[layer],
        evidence={"worst_input": exc.worst_input, "expected": exc.expected,
                  "received": exc.received})


def findings_from_gradcheck(report) -> list[Finding]:
    """Turn a :class:`nnx.gradcheck.GradcheckReport` into ``derivative-mismatch`` findings."""
    bad = {k: e for k, e in report.errors.items() if e > report.rtol}
    if not bad:
        return []
    layers = list(dict.fromkeys(k.split(".")[0] for k in bad))
    name, index, analytic, numeric = report.worst
    return [Finding(
        "derivative-mismatch", "error",
        f"the model's gradient disagrees with central differences in {', '.join(bad)} "
        f"(worst relative error {max(bad.values()):.3g})",
        f"Backpropagation computes a different gradient than the forward pass implies: "
        f"entry {index} of {name} is {analytic:.6g} by backward, {numeric:.6g} numerically. "
        "A custom activation's derivative or a custom layer's backward is wrong at or "
        "before the first layer listed.",
        "Check the derivative of every custom activation (nnx.activations.check_derivative) "
        "and the backward of custom layers (nnx.check_layer(layer)).",
        layers=layers, evidence={"errors": bad, "rtol": report.rtol})]


# --- the data ---------------------------------------------------------------------

def _sample_rows(x: np.ndarray, limit: int = 20000) -> np.ndarray:
    if x.shape[0] <= limit:
        return x
    idx = np.linspace(0, x.shape[0] - 1, limit).astype(np.int64)
    return x[idx]


def check_data(model, loss, x, y=None, *, others=()) -> list[Finding]:
    """Input scaling, labels, class balance, bounded regression outputs and leakage.

    ``others`` is ``[(name, (x, y)), ...]`` of held-out sets compared with ``x``.
    """
    loss = get_loss(loss)
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
    q = float(np.percentile(np.abs(xs), 99.9))
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
            evidence={"min": lo, "max": hi, "mean": mean, "std": std, "abs_p99_9": q}))
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
                              "range_p95": float(p95)}))
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
    n_out = _n_out(model)
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
    act = _output_activation(model)
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
