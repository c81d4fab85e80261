"""Optimizers with per-parameter step sizes: RMSProp, Adam and AdamW."""

from __future__ import annotations

import math

from .. import inplace
from ..backends import array_namespace
from ..errors import ConfigError
from .base import Optimizer, check_range, elementwise


def _check_eps(eps) -> float:
    eps = check_range("eps", eps, 0.0, math.inf)
    if eps == 0:
        raise ConfigError("eps must be positive (it keeps the step finite where v is 0), "
                          "e.g. eps=1e-8")
    return eps


class RMSProp(Optimizer):
    """RMSProp, as ``torch.optim.RMSprop(alpha=rho)`` (not centred, no momentum).

    ::

        v = rho * v + (1 - rho) * g**2
        p -= lr * g / (sqrt(v) + eps)

    ``eps`` is added outside the square root. ``weight_decay`` is decoupled
    (``p -= lr * weight_decay * p``); ``l2`` is PyTorch's ``weight_decay``.
    """

    name = "rmsprop"
    slots = ("v",)

    def __init__(self, lr: float, rho: float = 0.9, eps: float = 1e-8, *, l2: float = 0.0,
                 weight_decay: float = 0.0, clip_norm: float | None = None) -> None:
        super().__init__(lr, l2=l2, weight_decay=weight_decay, clip_norm=clip_norm)
        self.rho = check_range("rho", rho, 0.0, 1.0)
        self.eps = _check_eps(eps)

    @elementwise
    def _update(self, params, grads, k, state, lr):
        g = grads[k]
        xp = array_namespace(g)
        tmp = {"sq": g * g}
        inplace.mul_(tmp, "sq", 1.0 - self.rho)
        inplace.mul_(state, "v", self.rho)
        inplace.add_(state, "v", tmp["sq"])
        tmp["denom"] = xp.sqrt(state["v"])
        inplace.add_(tmp, "denom", self.eps)
        inplace.div_(grads, k, tmp["denom"])
        inplace.mul_(grads, k, lr)
        inplace.sub_(params, k, grads[k])

    def _fused_update(self, fast, p, g, state, lr):
        kernel = fast.rmsprop_update
        if kernel is None or type(self)._update is not RMSProp._update:
            return False
        kernel(p, g, state["v"], lr, self.rho, self.eps)
        return True

    def config(self) -> dict:
        return {**super().config(), "rho": self.rho, "eps": self.eps}


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (bias-corrected, eps outside the square root).

    At step ``t`` (from 1)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    ``weight_decay`` is decoupled (``p -= lr * weight_decay * p`` before the
    update), which makes ``Adam(weight_decay=w)`` the same as ``AdamW``; PyTorch's
    coupled ``Adam(weight_decay=w)`` is ``Adam(l2=w)`` here.
    """

    name = "adam"
    slots = ("m", "v")

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 *, l2: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, l2=l2, weight_decay=weight_decay, clip_norm=clip_norm)
        self.beta1 = check_range("beta1", beta1, 0.0, 1.0)
        self.beta2 = check_range("beta2", beta2, 0.0, 1.0)
        self.eps = _check_eps(eps)

    @elementwise
    def _update(self, params, grads, k, state, lr):
        b1, b2 = self.beta1, self.beta2
        g = grads[k]
        xp = array_namespace(g)
        # m = g + b1 * (m - g) = b1 * m + (1 - b1) * g, keeping g intact
        inplace.sub_(state, "m", g)
        inplace.mul_(state, "m", b1)
        inplace.add_(state, "m", g)
        # g is used up: square it in place for v
        inplace.mul_(grads, k, g)
        inplace.mul_(grads, k, 1.0 - b2)
        inplace.mul_(state, "v", b2)
        inplace.add_(state, "v", grads[k])
        step_size = lr / (1.0 - b1 ** self.t)
        fast = self._fast_for(grads[k])
        if fast is not None:
            # the same operations with g as the buffer: no temporary, no copy of m
            g = grads[k]
            fast.sqrt(state["v"], out=g)
            g /= math.sqrt(1.0 - b2 ** self.t)
            g += self.eps
            fast.divide(state["m"], g, out=g)
            g *= step_size
            inplace.sub_(params, k, g)
            return
        tmp = {"denom": xp.sqrt(state["v"])}  # the one temporary
        inplace.div_(tmp, "denom", math.sqrt(1.0 - b2 ** self.t))
        inplace.add_(tmp, "denom", self.eps)
        inplace.copy_(grads, k, state["m"])
        inplace.div_(grads, k, tmp["denom"])
        inplace.mul_(grads, k, step_size)
        inplace.sub_(params, k, grads[k])

    def _fused_update(self, fast, p, g, state, lr):
        kernel = fast.adam_update
        if kernel is None or type(self)._update is not Adam._update:
            return False
        kernel(p, g, state["m"], state["v"], lr, self.beta1, self.beta2, self.eps, self.t)
        return True

    def config(self) -> dict:
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``."""

    name = "adamw"

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 *, l2: float = 0.0, weight_decay: float = 0.01,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, beta1, beta2, eps, l2=l2, weight_decay=weight_decay,
                         clip_norm=clip_norm)
