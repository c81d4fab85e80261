"""Stochastic gradient descent: plain, with momentum, and Nesterov momentum."""

from __future__ import annotations

from .. import inplace
from ..errors import ConfigError
from .base import Optimizer, check_range, elementwise


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum, as ``torch.optim.SGD`` with dampening 0.

    With ``g`` the gradient (after clipping and ``l2``) and ``m`` the momentum
    buffer (zeros at first)::

        m = momentum * m + g
        p -= lr * (g + momentum * m)     if nesterov
        p -= lr * m                      otherwise (p -= lr * g without momentum)

    ``weight_decay`` is decoupled (``p -= lr * weight_decay * p``); ``l2`` is
    PyTorch's ``weight_decay``. See :class:`~nnx.optim.base.Optimizer`.
    """

    name = "sgd"

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False, *,
                 l2: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr, l2=l2, weight_decay=weight_decay, clip_norm=clip_norm)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("Nesterov momentum needs momentum > 0, e.g. momentum=0.9")
        self.slots = ("m",) if self.momentum else ()

    @elementwise
    def _update(self, params, grads, k, state, lr):
        mu = self.momentum
        if mu:
            inplace.mul_(state, "m", mu)
            inplace.add_(state, "m", grads[k])
            if self.nesterov:
                inplace.add_(grads, k, mu * state["m"])  # the one temporary
            elif (fast := self._fast_for(grads[k])) is not None:
                # g = lr * m in one pass instead of a copy and a scaling
                fast.multiply(state["m"], lr, out=grads[k])
                inplace.sub_(params, k, grads[k])
                return
            else:
                inplace.copy_(grads, k, state["m"])
        # the gradient buffer is free now: scale it in place rather than allocate lr * g
        inplace.mul_(grads, k, lr)
        inplace.sub_(params, k, grads[k])

    def _fused_update(self, fast, p, g, state, lr):
        kernel = fast.sgd_update
        if kernel is None or type(self)._update is not SGD._update:
            return False
        kernel(p, g, state.get("m"), lr, self.momentum, self.nesterov)
        return True

    def config(self) -> dict:
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}
