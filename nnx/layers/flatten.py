"""Flatten images ``(batch, height, width, channels)`` to rows ``(batch, h*w*channels)``."""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..errors import DataError
from .base import Layer


class Flatten(Layer):
    """``(batch, height, width, channels)`` -> ``(batch, height*width*channels)``, row-major
    (channels vary fastest, as in Keras); the backward pass reshapes ``dy`` back.

    Any ``(batch, ...)`` input works; ``(batch, n)`` passes through unchanged.
    """

    def output_shape(self, shape):
        """``(h*w*c,)`` for inputs ``(h, w, c)``."""
        return (math.prod(shape),)

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        if x.ndim < 2:
            raise DataError(f"layer {self.name!r} expects (batch, height, width, channels), "
                            f"got shape {tuple(x.shape)}")
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], math.prod(shape[1:])))

        def backward(dy):
            return xp.reshape(dy, shape)

        return y, backward
