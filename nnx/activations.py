"""Activations: each forward written right next to its derivative.

A derivative is called with keyword arguments only, ``derivative(z=z, a=a)``,
where ``z`` is the pre-activation and ``a = forward(z)`` the output, so every
definition says by name which of the two it uses. It returns ``da/dz``
elementwise, same shape and dtype as ``z``.

Custom activations are checked against float64 central differences when they
are defined (:func:`define_activation`); a wrong derivative raises
:class:`~nnx.errors.DerivativeMismatch` naming the worst input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .backends import array_namespace
from .errors import ConfigError, DerivativeMismatch, names_hint

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "define_activation",
           "check_derivative"]


@dataclass(frozen=True)
class Activation:
    """An elementwise function and its derivative.

    Attributes
    ----------
    name : registry name; ``param`` is appended as ``name:param`` when set.
    forward : ``z -> a``.
    derivative : ``(*, z, a) -> da/dz``.
    family : ``"relu"`` (He init), ``"sigmoid"``/``"tanh"`` (Xavier init, can
        saturate), or ``"linear"``/``"other"`` (Xavier init).
    output_range : bounds of ``a`` (used to spot bounded regression outputs).
    vjp : optional fast path ``(dy, *, z, a) -> dy * da/dz``; must agree with
        ``derivative`` (checked with it).
    param : the parameter a parametrised activation was built with, if any.
    """

    name: str
    forward: Callable
    derivative: Callable
    family: str = "other"
    output_range: tuple[float, float] = (-math.inf, math.inf)
    vjp: Callable | None = None
    param: float | None = None

    def __call__(self, z):
        return self.forward(z)

    def backward(self, dy, *, z, a):
        """Chain rule through the activation: ``dy * da/dz``."""
        if self.vjp is not None:
            return self.vjp(dy, z=z, a=a)
        return dy * self.derivative(z=z, a=a)

    @property
    def spec(self) -> str:
        """The string that rebuilds this activation with :func:`get_activation`."""
        return self.name if self.param is None else f"{self.name}:{self.param:g}"


# --- the built-in pairs -----------------------------------------------------

def identity(z):
    return z


def identity_backward(*, z, a):
    return array_namespace(z).ones_like(z)


def relu(z):
    # max against the scalar: as fast as against a row of zeros on NumPy 2, one call fewer
    return array_namespace(z).maximum(z, 0.0)


def relu_backward(*, z, a):
    # a 0/1 mask times dy: on NumPy 15x faster than where(z > 0, dy, 0), which branches
    xp = array_namespace(z)
    return xp.astype(z > 0, z.dtype)


def make_leaky_relu(alpha: float = 0.01) -> Activation:
    def leaky_relu(z):
        return array_namespace(z).where(z > 0, z, alpha * z)

    def leaky_relu_backward(*, z, a):
        # 1 where z > 0, else alpha; arithmetic on the mask, no branching where()
        xp = array_namespace(z)
        return alpha + (1.0 - alpha) * xp.astype(z > 0, z.dtype)

    return Activation("leaky_relu", leaky_relu, leaky_relu_backward, "relu", param=alpha)


def make_elu(alpha: float = 1.0) -> Activation:
    def elu(z):
        xp = array_namespace(z)
        # minimum() keeps expm1 from overflowing in the branch where() discards
        return xp.where(z > 0, z, alpha * xp.expm1(xp.minimum(z, 0.0)))

    def elu_backward(*, z, a):
        # for z <= 0: d/dz alpha*(e^z - 1) = alpha*e^z = a + alpha
        xp = array_namespace(z)
        return xp.where(z > 0, xp.ones_like(z), a + alpha)

    return Activation("elu", elu, elu_backward, "relu", (-alpha, math.inf), param=alpha)


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(z):
    # tanh approximation: the standard has no erf
    xp = array_namespace(z)
    return 0.5 * z * (1.0 + xp.tanh(_GELU_C * (z + 0.044715 * z * z * z)))


def gelu_backward(*, z, a):
    xp = array_namespace(z)
    t = xp.tanh(_GELU_C * (z + 0.044715 * z * z * z))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * z * z)


def sigmoid(z):
    # exp(-|z|) never overflows; pick the stable form on each side of 0
    xp = array_namespace(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(*, z, a):
    return a * (1.0 - a)


def silu(z):
    return z * sigmoid(z)


def silu_backward(*, z, a):
    # d/dz z*s(z) = s + z*s*(1-s)
    s = sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def tanh(z):
    return array_namespace(z).tanh(z)


def tanh_backward(*, z, a):
    return 1.0 - a * a


def softplus(z):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|), stable for any z
    xp = array_namespace(z)
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def softplus_backward(*, z, a):
    return sigmoid(z)


def abs_(z):
    return array_namespace(z).abs(z)


def abs_backward(*, z, a):
    return array_namespace(z).sign(z)


def sin(z):
    return array_namespace(z).sin(z)


def sin_backward(*, z, a):
    return array_namespace(z).cos(z)


#: name -> Activation (parametrised ones hold their default parameter)
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("identity", identity, identity_backward, "linear"),
        Activation("relu", relu, relu_backward, "relu", (0.0, math.inf)),
        make_leaky_relu(),
        make_elu(),
        Activation("gelu", gelu, gelu_backward, "relu", (-0.17, math.inf)),
        Activation("silu", silu, silu_backward, "relu", (-0.28, math.inf)),
        Activation("sigmoid", sigmoid, sigmoid_backward, "sigmoid", (0.0, 1.0)),
        Activation("tanh", tanh, tanh_backward, "tanh", (-1.0, 1.0)),
        Activation("softplus", softplus, softplus_backward, "relu", (0.0, math.inf)),
        Activation("abs", abs_, abs_backward, "relu", (0.0, math.inf)),
        Activation("sin", sin, sin_backward, "other", (-1.0, 1.0)),
    ]
}
ACTIVATIONS["linear"] = ACTIVATIONS["identity"]
_FACTORIES = {"leaky_relu": make_leaky_relu, "elu": make_elu}
#: name -> the code of nnx's own derivative of that name (a fused kernel may stand in for it)
_OWN_DERIVATIVES = {name: a.derivative.__code__ for name, a in ACTIVATIONS.items()}


def is_builtin(act: Activation) -> bool:
    """True when ``act`` is nnx's own activation of its name (any parameter), not a user's:
    a backend's fused backward kernel for that name computes exactly its derivative."""
    return getattr(act.derivative, "__code__", None) is _OWN_DERIVATIVES.get(act.name) and (
        act.vjp is None)


def get_activation(spec: str | Activation | None) -> Activation:
    """Look up an activation by name (``"relu"``, ``"leaky_relu:0.2"``) or pass one through.

    ``None`` means identity.
    """
    if spec is None:
        return ACTIVATIONS["identity"]
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"activation must be a name or an Activation, got {type(spec).__name__}")
    name, _, param = spec.strip().lower().partition(":")
    if name not in ACTIVATIONS:
        raise ConfigError(names_hint("activation", name, ACTIVATIONS))
    if not param:
        return ACTIVATIONS[name]
    if name not in _FACTORIES:
        raise ConfigError(f"activation {name!r} takes no parameter (got {spec!r}); "
                          f"only {', '.join(_FACTORIES)} do, e.g. leaky_relu:0.1")
    try:
        value = float(param)
    except ValueError:
        raise ConfigError(f"activation parameter in {spec!r} must be a number, "
                          "e.g. leaky_relu:0.1") from None
    return _FACTORIES[name](value)


# --- checking a derivative --------------------------------------------------

#: relative tolerance of the float64 central-difference check
DERIVATIVE_RTOL = 1e-4


def _host_xp():
    from . import backends  # the NumPy backend: float64 on the host

    return backends.get("numpy")


def check_derivative(act: Activation, *, low: float = -5.0, high: float = 5.0,
                     n: int = 2001, rtol: float = DERIVATIVE_RTOL) -> float:
    """Compare ``act.derivative`` (and ``act.vjp``) with central differences.

    Evaluates on ``n`` float64 points spread over ``[low, high]`` (plus a few
    large-magnitude points). Points at a kink, where the left and right
    one-sided differences disagree, are skipped. Returns the worst relative
    error; raises :class:`DerivativeMismatch` when it exceeds ``rtol``.
    """
    backend = _host_xp()
    xp = backend.xp
    host = [low + (high - low) * (i + 0.5) / n for i in range(n)] + [-30.0, -12.0, 12.0, 30.0]
    z = backend.asarray(host, "float64")
    h = 1e-6
    f0, fp, fm = act.forward(z), act.forward(z + h), act.forward(z - h)
    numeric = (fp - fm) / (2 * h)
    one_sided_gap = xp.abs((fp - f0) / h - (f0 - fm) / h)
    smooth = one_sided_gap <= 1e-3 * (1.0 + xp.abs(numeric))
    analytic = act.derivative(z=z, a=f0)
    if analytic.shape != z.shape:
        raise DerivativeMismatch(
            f"derivative of activation {act.name!r} returned shape {tuple(analytic.shape)} "
            f"for input shape {tuple(z.shape)}; it must be elementwise", name=act.name)
    checks = [("derivative", analytic)]
    if act.vjp is not None:
        checks.append(("vjp", act.vjp(xp.ones_like(z), z=z, a=f0)))
    worst_err = 0.0
    for what, received in checks:
        err = xp.abs(received - numeric) / (1.0 + xp.abs(numeric))
        err = xp.where(smooth, err, 0.0)
        err = xp.where(xp.isnan(err), xp.asarray(math.inf, dtype=err.dtype), err)
        i = int(xp.argmax(err))
        e = float(err[i])
        worst_err = max(worst_err, e)
        if e > rtol:
            zi, ei, ri = float(z[i]), float(numeric[i]), float(received[i])
            raise DerivativeMismatch(
                f"the {what} of activation {act.name!r} disagrees with its forward: at "
                f"z = {zi:.6g} central differences give {ei:.6g} but it returns {ri:.6g} "
                f"(relative error {e:.3g} > {rtol:g}). Check that it computes da/dz of the "
                "forward, and whether it should use z (the pre-activation) or a (the output)",
                name=act.name, worst_input=zi, expected=ei, received=ri)
    return worst_err


def define_activation(name: str, forward: Callable, derivative: Callable, *,
                      family: str = "other", output_range=(-math.inf, math.inf),
                      vjp: Callable | None = None, register: bool = True,
                      check: bool = True) -> Activation:
    """Define (and by default register) a custom activation, checking its derivative.

    Parameters
    ----------
    forward : ``z -> a``, written with ``array_namespace(z)`` so it runs on any backend.
    derivative : ``(*, z, a) -> da/dz``.
    family : ``"relu"`` for He initialisation, ``"sigmoid"``/``"tanh"`` for Xavier and
        saturation checks, else ``"other"``.

    Raises
    ------
    DerivativeMismatch
        when ``derivative`` disagrees with central differences of ``forward``.
    """
    act = Activation(name, forward, derivative, family, tuple(output_range), vjp)
    if check:
        check_derivative(act)
    if register:
        ACTIVATIONS[name] = act
    return act
