"""Numerical gradient checks in float64 on the host.

:func:`gradcheck` compares every parameter gradient of a whole model (and
loss) with central differences; :func:`check_layer` does the same for one
layer with a random upstream gradient, including its input gradient. Both
copy the parameters to NumPy float64 and put the originals back afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import backends
from .errors import DerivativeMismatch
from .losses import get_loss

#: a gradient passes when its relative error is below this (float64)
GRADCHECK_RTOL = 1e-6


@dataclass
class GradcheckReport:
    """Per-parameter relative errors: ``errors["dense_0.w"] = 3e-10``."""

    errors: dict
    worst: tuple  # (name, index, analytic, numeric)
    rtol: float

    @property
    def ok(self) -> bool:
        return all(e <= self.rtol for e in self.errors.values())

    def __str__(self) -> str:
        lines = [f"{'parameter':<24} rel. error   {'ok' if self.ok else 'FAILED'}"]
        for k, e in self.errors.items():
            lines.append(f"{k:<24} {e:9.2e}    {'ok' if e <= self.rtol else 'MISMATCH'}")
        return "\n".join(lines)


#: below this magnitude a gradient is compared absolutely: a gradient that is exactly
#: zero (a bias before BatchNorm) gets ~1e-10 of noise from float64 central differences
GRAD_FLOOR = 1e-3


def _rel_error(a, b, xp) -> float:
    # max |a - b| / max(|a|, |b|, GRAD_FLOOR), over the whole tensor
    num = float(xp.max(xp.abs(a - b)))
    den = max(float(xp.max(xp.abs(a))), float(xp.max(xp.abs(b))), GRAD_FLOOR)
    return num / den


class _Float64Copy:
    """Context manager: swap every layer's arrays for host float64 copies."""

    def __init__(self, layers, source_backend):
        self.layers, self.src = layers, source_backend
        self.host = backends.get("numpy")

    def __enter__(self):
        self.saved = []
        for la in self.layers:
            self.saved.append((la.params, la.grads, la.state))
            la.params = {k: self.host.asarray(self.src.to_numpy(v), "float64")
                         for k, v in la.params.items()}
            la.state = {k: self.host.asarray(self.src.to_numpy(v), "float64")
                        for k, v in la.state.items()}
            la.grads = {}
            la.zero_grads()
        return self.host

    def __exit__(self, *exc):
        for la, (p, g, s) in zip(self.layers, self.saved):
            la.params, la.grads, la.state = p, g, s
        return False


def _central_differences(f, arrays, h, max_entries=None, rng=None):
    """d f / d arrays[k] by central differences, perturbing one entry at a time.

    Returns ``{key: (flat indices, numeric derivatives)}``. With ``max_entries``
    only that many entries per array are probed (picked by ``rng``), which keeps
    the check of a large layer fast.
    """
    out = {}
    for key, (holder, name) in arrays.items():
        flat = holder[name].reshape(-1)  # host NumPy, a view
        size = flat.shape[0]
        if max_entries is not None and size > max_entries:
            idx = sorted(int(i) for i in rng.choice(size, max_entries, replace=False))
        else:
            idx = list(range(size))
        grad = []
        for i in idx:
            old = float(flat[i])
            flat[i] = old + h
            fp = f()
            flat[i] = old - h
            fm = f()
            flat[i] = old
            grad.append((fp - fm) / (2 * h))
        out[key] = (idx, grad)
    return out


def _at(host, array, idx):
    """Entries ``idx`` of ``array`` (flattened) as a host float64 array."""
    flat = array.reshape(-1)
    return host.asarray([float(flat[i]) for i in idx], "float64")


def gradcheck(model, loss, x, y, *, h: float = 1e-6, rtol: float = GRADCHECK_RTOL,
              raise_on_error: bool = False) -> GradcheckReport:
    """Check every parameter gradient of ``model`` under ``loss`` on a batch.

    Parameters
    ----------
    model : an initialised Sequential (any backend; checked on a float64 host copy).
    loss : a loss name or object; its value is the batch mean.
    x : array of shape (batch, n_in); keep the batch small (e.g. 4-16 rows).
    y : labels (batch,) or targets (batch, k).

    Stochastic layers (Dropout) are switched off (``train=False``) so the function
    is deterministic; a model with a batch-dependent layer (BatchNorm) and no
    stochastic one is checked in training mode, without updating its statistics.
    Layers declare both (``Layer.stochastic``, ``Layer.batch_dependent``).
    """
    loss = get_loss(loss)
    src = model.backend
    layers = list(model.layers)
    with _Float64Copy(layers, src) as host:
        xh = host.asarray(src.to_numpy(x) if not _is_host(x) else x, "float64")
        yn = src.to_numpy(y) if not _is_host(y) else y
        yh = host.asarray(yn, "int64" if yn.dtype.kind in "iu" else "float64")
        frozen = {la.name: dict(la.state) for la in layers}

        def value():
            for la in layers:
                la.state = dict(frozen[la.name])
            out, _ = model.forward(xh, train=_train_mode(model))
            return float(loss(out, yh)[0])

        for la in layers:
            la.zero_grads()
        out, backward = model.forward(xh, train=_train_mode(model))
        backward(loss(out, yh)[1])
        analytic = {f"{la.name}.{k}": la.grads[k] for la in layers for k in la.params}
        targets = {f"{la.name}.{k}": (la.params, k) for la in layers for k in la.params}
        numeric = _central_differences(value, targets, h)
        xp = host.xp
        errors, worst = {}, (None, None, 0.0, 0.0)
        worst_err = -1.0
        for k in analytic:
            idx, num = numeric[k]
            ana, num = _at(host, analytic[k], idx), host.asarray(num, "float64")
            e = _rel_error(ana, num, xp)
            errors[k] = e
            if e > worst_err:
                j = int(xp.argmax(xp.abs(ana - num)))
                worst = (k, idx[j], float(ana[j]), float(num[j]))
                worst_err = e
        for la in layers:
            la.state = frozen[la.name]
    report = GradcheckReport(errors, worst, rtol)
    if raise_on_error and not report.ok:
        name, i, a, n = worst
        raise DerivativeMismatch(
            f"gradient of {name} disagrees with central differences: entry {i} is {a:.6g}, "
            f"numerically {n:.6g} (relative error {errors[name]:.3g} > {rtol:g}); check the "
            f"backward of layer {name.split('.')[0]!r}", name=name, worst_input=i,
            expected=n, received=a)
    return report


def check_layer(layer, *, input_shape=None, batch: int = 4, seed: int = 0,
                rtol: float = 1e-5, max_entries: int | None = 64) -> float:
    """Check a (custom) layer's backward: parameter and input gradients.

    Uses ``L = sum(forward(x) * g)`` with random ``x`` ``(batch, *input_shape)`` and
    ``g`` so every output contributes. ``input_shape`` is the per-example shape the
    layer receives: ``(height, width, channels)`` for a layer on images (a
    ``Sequential`` built with ``input_shape`` passes each layer's own), by default
    ``(n_in,)``, or ``(3,)`` for a layer without sizes. At most ``max_entries`` entries of each
    parameter (and of the input) are probed, at random, so a large layer is
    checked in milliseconds; ``None`` probes all. Raises
    :class:`DerivativeMismatch` naming the layer and the worst entry. Returns
    the worst relative error.
    """
    src = layer.backend
    host = backends.get("numpy")
    rng = host.rng(seed)
    shape = tuple(input_shape) if input_shape is not None else (layer.n_in or 3,)
    with _Float64Copy([layer], src):
        x = host.asarray(rng.standard_normal((batch, *shape)), "float64")
        y0, _ = layer.forward(x, train=False)
        g = host.asarray(rng.standard_normal(tuple(y0.shape)), "float64")
        xp = host.xp
        holder = {"x": x}

        def value():
            return float(xp.sum(layer.forward(holder["x"], train=False)[0] * g))

        layer.zero_grads()
        _, backward = layer.forward(x, train=False)
        dx = backward(g)
        analytic = {f"{layer.name}.{k}": layer.grads[k] for k in layer.params}
        targets = {f"{layer.name}.{k}": (layer.params, k) for k in layer.params}
        if dx is not None:
            analytic[f"{layer.name}.input"] = dx
            targets[f"{layer.name}.input"] = (holder, "x")
        numeric = _central_differences(value, targets, 1e-6, max_entries, rng)
        worst = 0.0
        for k in analytic:
            (holder_k, name_k) = targets[k]
            expected_shape = tuple(holder_k[name_k].shape)
            if tuple(analytic[k].shape) != expected_shape:
                raise DerivativeMismatch(
                    f"layer {layer.name!r}: gradient {k} has shape {tuple(analytic[k].shape)}, "
                    f"expected {expected_shape}", name=layer.name)
            idx, num = numeric[k]
            ana, num = _at(host, analytic[k], idx), host.asarray(num, "float64")
            e = _rel_error(ana, num, xp)
            worst = max(worst, e)
            if e > rtol:
                j = int(xp.argmax(xp.abs(ana - num)))
                i, a, n = idx[j], float(ana[j]), float(num[j])
                raise DerivativeMismatch(
                    f"custom layer {type(layer).__name__} ({layer.name!r}): backward disagrees "
                    f"with central differences for {k.split('.', 1)[1]} at entry {i}: returns "
                    f"{a:.6g}, numerically {n:.6g} (relative error {e:.3g} > {rtol:g})",
                    name=layer.name, worst_input=i, expected=n, received=a)
        layer.zero_grads()
    return worst


def _is_host(a) -> bool:
    return type(a).__module__.startswith("numpy")


def _train_mode(model) -> bool:
    # a batch-dependent layer (BatchNorm) is defined by its training-mode forward; a
    # stochastic one (Dropout) must be off, so the checked function is deterministic.
    # The layers declare both (Layer.batch_dependent, Layer.stochastic): no layer types here.
    layers = model.layers
    return (any(getattr(la, "batch_dependent", False) for la in layers)
            and not any(getattr(la, "stochastic", False) for la in layers))
