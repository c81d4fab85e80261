"""Checks of the model before training: the output layer against the loss, symmetric units
in the initial weights, and custom derivatives (against central differences).

:func:`check_model` and :func:`check_derivatives` are run by :func:`nnx.doctor.check`;
:func:`check_symmetry` also runs after training, to say whether copies survived.
"""

from __future__ import annotations

import numpy as np

from ..activations import check_derivative
from ..errors import DerivativeMismatch
from ..layers import ActivationLayer, BatchNorm, MixedActivation
from ..losses import SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy, get_loss
from . import findings as T
from .findings import Finding

__all__ = ["check_model", "check_symmetry", "check_derivatives", "findings_from_gradcheck",
           "to_host", "output_activation"]


def to_host(model, a) -> np.ndarray | None:
    """A host NumPy copy of ``a`` (a device array of the model's backend, or host data)."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("numpy"):
        return np.asarray(a)
    return np.asarray(model.backend.to_numpy(a))


# --- the model and its loss ----------------------------------------------------

def output_activation(model):
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
    act = output_activation(model)
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
            layers=last, evidence={"output_activation": name, "loss": loss.name},
            action={"output": "linear"}))
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


def _unit_signatures(model, weights: dict, a: int, b: int, units: np.ndarray):
    """``(len(units), k)`` rows: for each of ``units`` of dense layer ``a``, its incoming
    weights, bias, per-unit parameters up to dense layer ``b`` and outgoing weights."""
    la = model.layers[a]
    parts = [weights[f"{la.name}.w"][:, units].T]
    if f"{la.name}.b" in weights:
        parts.append(weights[f"{la.name}.b"][units, None])
    for mid in model.layers[a + 1:b]:                   # per-unit parameters in between
        if isinstance(mid, BatchNorm):
            parts += [weights[f"{mid.name}.gamma"][units, None],
                      weights[f"{mid.name}.beta"][units, None]]
    parts.append(weights[f"{model.layers[b].name}.w"][units])
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1)


def _hash_columns(a: np.ndarray) -> np.ndarray:
    """An exact 64-bit hash of each column of ``a``: a random linear hash of the columns'
    words in wrapping integer arithmetic, which is associative, so equal columns always
    get equal hashes (-0.0 counts as 0.0)."""
    a = np.asarray(a)
    a = np.asarray(a + 0.0, dtype=np.float64 if a.dtype == np.float64 else np.float32)
    words = a.view(np.uint64 if a.dtype == np.float64 else np.uint32).astype(np.uint64)
    mult = np.random.default_rng(12345).integers(1, 2**63, a.shape[0], dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        return (words * mult[:, None]).sum(axis=0, dtype=np.uint64)


def _repeated(keys: np.ndarray) -> np.ndarray:
    """Indices of the entries of ``keys`` equal to another entry."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    same = np.nonzero(k[1:] == k[:-1])[0]
    return np.unique(np.concatenate([order[same], order[same + 1]]))


def _identical_units(model, weights: dict, a: int, b: int) -> tuple[int, int, int]:
    """``(units that copy another unit, groups of copies, units)`` of dense layer ``a``.

    Only units whose incoming weights hash alike can be copies, so the full signatures
    (with bias and outgoing weights) are built and compared for those alone: a random
    initialisation costs one pass over the incoming weights.
    """
    w_in = weights[f"{model.layers[a].name}.w"]         # (n_in, n)
    n = w_in.shape[1]
    if weights[f"{model.layers[b].name}.w"].shape[0] != n:
        return 0, 0, n
    units = _repeated(_hash_columns(w_in))
    if units.size == 0:
        return 0, 0, n
    sig = _unit_signatures(model, weights, a, b, units)
    _, counts = np.unique(sig, axis=0, return_counts=True)
    return int(counts[counts > 1].sum()), int((counts > 1).sum()), n


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
    dense = [i for i, la in enumerate(model.layers) if "w" in la.params
             and la.params["w"].ndim == 2]
    if len(dense) < 2:
        return []
    weights = model.get_weights()
    out = []
    for a, b in zip(dense, dense[1:]):
        copies, groups, n = _identical_units(model, weights, a, b)
        if copies:
            zero = bool(np.all(weights[f"{model.layers[a].name}.w"] == 0))
            out.append(_symmetry_finding(model, a, b, copies, groups, n, after_steps, zero))
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


def _check_custom_parts(layer, seen: set, shape=None) -> tuple[bool, list[Finding]]:
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
            check_layer(layer, input_shape=shape)
        except DerivativeMismatch as exc:
            out.append(_mismatch(exc, layer.name, f"layer {type(layer).__name__}"))
    return custom, out


def check_derivatives(model, loss=None, x=None, y=None, *,
                      gradcheck: bool | str = "auto") -> list[Finding]:
    """Check custom activations and layers, and (small models) the whole model's gradient."""
    out = []
    custom = False
    seen = set()
    shapes = (model.layer_input_shapes() if hasattr(model, "layer_input_shapes")
              else [None] * len(model.layers))
    for layer, shape in zip(model.layers, shapes):
        has_custom, found = _check_custom_parts(layer, seen, shape)
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
