"""Elementwise activation layers: one activation for all units, or one per unit."""

from __future__ import annotations

import functools

from ..activations import Activation, get_activation, is_builtin
from ..backends import array_namespace
from ..errors import ConfigError
from .base import Layer


class ActivationLayer(Layer):
    """Apply one activation elementwise. ``x`` and ``y`` are ``(batch, n)``."""

    def __init__(self, activation: str | Activation = "relu") -> None:
        super().__init__()
        self.activation = get_activation(activation)

    def forward(self, x, *, train=False):
        act = self.activation
        a = act.forward(x)
        fused = self._fused_backward(x)

        def backward(dy):
            if fused is not None:  # the same maths in one kernel (CuPy)
                return fused(dy, x, a)
            return act.backward(dy, z=x, a=a)

        return a, backward

    def _fused_backward(self, x):
        """The backend's one-kernel ``dy * derivative`` for nnx's own activation, when
        ``x`` lives on that backend (not a gradient check's host copy), else None."""
        fast = getattr(self.backend, "fast", None)
        kernel = getattr(fast, f"{self.activation.name}_backward", None) if fast else None
        if kernel is None or not is_builtin(self.activation):
            return None
        if array_namespace(x) is not self.backend.xp:
            return None
        param = self.activation.param
        return kernel if param is None else functools.partial(kernel, alpha=param)

    def config(self) -> dict:
        return {"activation": self.activation.spec}


class MixedActivation(Layer):
    """Give different units different activations.

    ``activations`` is a list with one entry per unit (``n`` entries), or a
    list of ``(activation, count)`` groups whose counts add up to ``n``. Units
    are grouped by activation, so the cost is one pass per distinct activation,
    not per unit.

    ``x`` and ``y`` are ``(batch, n)``.
    """

    def __init__(self, activations, n: int | None = None) -> None:
        super().__init__()
        per_unit = []
        for item in activations:
            if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], int):
                per_unit += [get_activation(item[0]).spec] * item[1]
            else:
                per_unit.append(get_activation(item).spec)
        if not per_unit:
            raise ConfigError("MixedActivation needs at least one activation")
        if n is not None and n != len(per_unit):
            raise ConfigError(f"MixedActivation got {len(per_unit)} activations for {n} units")
        self.per_unit = per_unit
        self.n_in = self.n_out = len(per_unit)
        self.groups = {}
        for i, spec in enumerate(per_unit):
            self.groups.setdefault(spec, []).append(i)

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        if x.shape[-1] != self.n_in:
            raise ConfigError(f"MixedActivation has {self.n_in} units, input has {x.shape[-1]}")
        # one boolean column mask per activation; where() (not mask * f) so that a
        # value that is inf in a unit that does not use f cannot leak a NaN
        masks = self._masks(xp, x)
        outs = {spec: get_activation(spec).forward(x) for spec in self.groups}
        y = xp.zeros_like(x)
        for s in self.groups:
            y = xp.where(masks[s], outs[s], y)

        def backward(dy):
            dx = xp.zeros_like(dy)
            for s in self.groups:
                dx = xp.where(masks[s], get_activation(s).backward(dy, z=x, a=outs[s]), dx)
            return dx

        return y, backward

    def _masks(self, xp, x):
        key = (str(x.dtype), str(getattr(x, "device", "")))
        cache = getattr(self, "_mask_cache", {})
        if key not in cache:
            cache[key] = {
                s: xp.asarray([spec == s for spec in self.per_unit], dtype=xp.bool,
                              device=x.device)
                for s in self.groups}
            self._mask_cache = cache
        return cache[key]

    def config(self) -> dict:
        return {"activations": self.per_unit}
