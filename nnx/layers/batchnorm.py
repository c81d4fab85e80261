"""Batch normalisation per feature (or per image channel), with running statistics."""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..arguments import whole_number
from ..errors import ConfigError, DataError
from .base import Layer


class BatchNorm(Layer):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per feature.

    Training uses the batch mean and (biased) variance and updates
    ``state["running_mean"]``/``state["running_var"]`` with ``momentum``
    (``running = (1 - momentum) * running + momentum * batch``, unbiased
    variance, as PyTorch does). Evaluation uses the running statistics.
    ``x`` and ``y`` are ``(batch, n)``, or images ``(batch, height, width, n)``:
    then each channel is normalised with statistics over batch, height and width
    (as PyTorch's BatchNorm2d). In data-parallel training with ``sync_batchnorm``,
    ``layer.sync`` (set by :mod:`nnx.distributed`) sums the statistics and their
    gradients over every rank's rows, so they are those of the global batch.
    """

    batch_dependent = True

    def __init__(self, n: int, *, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.n_in = self.n_out = n = whole_number(n, "BatchNorm size")
        self.momentum, self.eps = float(momentum), float(eps)

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        xp, dt, dev = backend.xp, backend.dtype(dtype), backend.device
        self.params["gamma"] = xp.ones((self.n_in,), dtype=dt, device=dev)
        self.params["beta"] = xp.zeros((self.n_in,), dtype=dt, device=dev)
        self.state["running_mean"] = xp.zeros((self.n_in,), dtype=dt, device=dev)
        self.state["running_var"] = xp.ones((self.n_in,), dtype=dt, device=dev)
        self.zero_grads()

    def output_shape(self, shape):
        """The input shape: ``(n,)`` or ``(h, w, n)``."""
        if len(shape) not in (1, 3) or shape[-1] != self.n_in:
            raise ConfigError(f"layer {self.name!r} normalises {self.n_in} features or "
                              f"channels but the layer before it gives shape {tuple(shape)}")
        return shape

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        if x.ndim not in (2, 4) or x.shape[-1] != self.n_in:
            raise DataError(f"layer {self.name!r} expects (batch, {self.n_in}) or images "
                            f"(batch, height, width, {self.n_in}), got shape {tuple(x.shape)}")
        gamma, beta = self.params["gamma"], self.params["beta"]
        axes = tuple(range(x.ndim - 1))  # every axis but the channels
        if not train:
            inv = 1.0 / xp.sqrt(self.state["running_var"] + self.eps)
            xhat = (x - self.state["running_mean"]) * inv

            def backward_eval(dy):
                self.grads["gamma"] += xp.sum(dy * xhat, axis=axes)
                self.grads["beta"] += xp.sum(dy, axis=axes)
                return dy * (gamma * inv)

            return gamma * xhat + beta, backward_eval

        sync = getattr(self, "sync", None)  # data-parallel: statistics over every rank's rows
        if sync is None:
            m = math.prod(x.shape[:-1])
            mean = xp.mean(x, axis=axes)
            xc = x - mean
            var = xp.mean(xc * xc, axis=axes)
        else:  # sums of every rank; the global batch has sync.count examples
            m = sync.count * math.prod(x.shape[1:-1])
            mean = sync.sum(xp.sum(x, axis=axes)) / m
            xc = x - mean
            var = sync.sum(xp.sum(xc * xc, axis=axes)) / m
        inv = 1.0 / xp.sqrt(var + self.eps)
        xhat = xc * inv
        mom = self.momentum
        unbiased = var * (m / max(m - 1, 1))
        self.state["running_mean"] = (1 - mom) * self.state["running_mean"] + mom * mean
        self.state["running_var"] = (1 - mom) * self.state["running_var"] + mom * unbiased

        def backward(dy):
            # dx = gamma*inv/m * (m*dy - sum(dy) - xhat*sum(dy*xhat)), per feature
            dgamma = xp.sum(dy * xhat, axis=axes)
            dbeta = xp.sum(dy, axis=axes)
            self.grads["gamma"] += dgamma
            self.grads["beta"] += dbeta
            if sync is not None:  # dx needs the sums over the global batch
                both = sync.sum(xp.concat([dbeta, dgamma]))
                dbeta, dgamma = both[:self.n_in], both[self.n_in:]
            return (gamma * inv / m) * (m * dy - dbeta - xhat * dgamma)

        return gamma * xhat + beta, backward

    def config(self) -> dict:
        return {"n": self.n_in, "momentum": self.momentum, "eps": self.eps}
