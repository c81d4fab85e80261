"""Batch normalisation over the batch axis, with running statistics for evaluation."""

from __future__ import annotations

from array_api_compat import array_namespace

from ..errors import ConfigError
from .base import Layer


class BatchNorm(Layer):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per feature.

    Training uses the batch mean and (biased) variance and updates
    ``state["running_mean"]``/``state["running_var"]`` with ``momentum``
    (``running = (1 - momentum) * running + momentum * batch``, unbiased
    variance, as PyTorch does). Evaluation uses the running statistics.
    ``x`` and ``y`` are ``(batch, n)``.
    """

    batch_dependent = True

    def __init__(self, n: int, *, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(n, int) or n <= 0:
            raise ConfigError(f"BatchNorm size must be a positive integer, got {n!r}")
        self.n_in = self.n_out = n
        self.momentum, self.eps = float(momentum), float(eps)

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        xp, dt, dev = backend.xp, backend.dtype(dtype), backend.device
        self.params["gamma"] = xp.ones((self.n_in,), dtype=dt, device=dev)
        self.params["beta"] = xp.zeros((self.n_in,), dtype=dt, device=dev)
        self.state["running_mean"] = xp.zeros((self.n_in,), dtype=dt, device=dev)
        self.state["running_var"] = xp.ones((self.n_in,), dtype=dt, device=dev)
        self.zero_grads()

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not train:
            inv = 1.0 / xp.sqrt(self.state["running_var"] + self.eps)
            xhat = (x - self.state["running_mean"]) * inv

            def backward_eval(dy):
                self.grads["gamma"] += xp.sum(dy * xhat, axis=0)
                self.grads["beta"] += xp.sum(dy, axis=0)
                return dy * (gamma * inv)

            return gamma * xhat + beta, backward_eval

        m = x.shape[0]
        mean = xp.mean(x, axis=0)
        xc = x - mean
        var = xp.mean(xc * xc, axis=0)
        inv = 1.0 / xp.sqrt(var + self.eps)
        xhat = xc * inv
        mom = self.momentum
        unbiased = var * (m / max(m - 1, 1))
        self.state["running_mean"] = (1 - mom) * self.state["running_mean"] + mom * mean
        self.state["running_var"] = (1 - mom) * self.state["running_var"] + mom * unbiased

        def backward(dy):
            # dx = gamma*inv/m * (m*dy - sum(dy) - xhat*sum(dy*xhat)), per feature
            dgamma = xp.sum(dy * xhat, axis=0)
            dbeta = xp.sum(dy, axis=0)
            self.grads["gamma"] += dgamma
            self.grads["beta"] += dbeta
            return (gamma * inv / m) * (m * dy - dbeta - xhat * dgamma)

        return gamma * xhat + beta, backward

    def config(self) -> dict:
        return {"n": self.n_in, "momentum": self.momentum, "eps": self.eps}
