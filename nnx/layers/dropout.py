"""Inverted dropout: zero a fraction ``p`` of units in training, scale the rest by 1/(1-p)."""

from __future__ import annotations

from array_api_compat import array_namespace

from ..errors import ConfigError
from .base import Layer


class Dropout(Layer):
    """Inverted dropout. ``x`` and ``y`` are ``(batch, n)`` or feature maps ``(batch,
    height, width, channels)`` (each unit of each map dropped on its own); identity when
    not training.

    Masks come from the backend's device generator (``backend.device_rng``),
    seeded from the model's host generator at ``init``: reproducible on one
    backend, not bitwise identical across backends.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.stochastic = self.p > 0.0  # p = 0 draws no masks
        self.rng = None

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        self.rng = backend.device_rng(int(rng.integers(2**31)))

    def forward(self, x, *, train=False):
        if not train or self.p == 0.0:
            return x, lambda dy: dy
        xp = array_namespace(x)
        keep = 1.0 - self.p
        if self.rng is None:
            raise ConfigError("Dropout layer used before init(); build the model with "
                              "model.init(backend, rng) or through nnx.Trainer")
        mask = xp.astype(self.rng.uniform(x.shape, x.dtype) < keep, x.dtype) * (1.0 / keep)
        return x * mask, lambda dy: dy * mask

    def config(self) -> dict:
        return {"p": self.p}
