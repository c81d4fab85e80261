"""Pooling over images ``(batch, height, width, channels)``: max, average, global average.

The windows are the ``size*size`` strided slices of the input (no padding:
windows that would run past the edge are left out, as in Keras' and PyTorch's
default); the backward pass adds each slice's gradient back where it came from.
"""

from __future__ import annotations

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from ..errors import ConfigError
from .base import Layer
from .images import (
    add_window,
    check_images,
    images_in,
    out_size,
    positive_int,
    window,
    window_output,
)


class _Pool2D(Layer):
    """A ``size x size`` window moved by ``stride`` (default ``size``) over each channel."""

    def __init__(self, size: int, stride: int | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.size = positive_int(owner, "size", size)
        self.stride = self.size if stride is None else positive_int(owner, "stride", stride)

    def output_shape(self, shape):
        """``(out_h, out_w, c)`` for inputs ``(h, w, c)``."""
        h, w, c = images_in(self.name, shape)
        *_, ho, wo = window_output(self, (h, w), self.size, self.stride, 0, ConfigError)
        return ho, wo, c

    def _windows(self, x):
        """``(out_h, out_w, [window entry (i, j) of every window, in row-major order])``."""
        check_images(self, x)
        k, s = self.size, self.stride
        *_, ho, wo = window_output(self, tuple(x.shape[1:3]), k, s)
        return ho, wo, [window(x, i, j, s, ho, wo) for i in range(k) for j in range(k)]

    def _scatter(self, x, pieces):
        """``dx`` of ``x``'s shape: each ``pieces(i*k + j)`` added back at window entry (i, j)."""
        xp = array_namespace(x)
        k, s = self.size, self.stride
        ho, wo = out_size(x.shape[1], k, s), out_size(x.shape[2], k, s)
        # windows that tile x exactly write every entry once: nothing to zero first
        tiles = s == k and x.shape[1] == ho * k and x.shape[2] == wo * k
        dx = (xp.empty if tiles else xp.zeros)(tuple(x.shape), dtype=x.dtype,
                                               device=device_of(x))
        for i in range(k):
            for j in range(k):
                add_window(dx, i, j, s, pieces(i * k + j), disjoint=s >= k)
        return dx

    def config(self) -> dict:
        return {"size": self.size, "stride": self.stride}


class MaxPool2D(_Pool2D):
    """Largest value of each ``size x size`` window, per channel.

    ``x`` is ``(batch, height, width, channels)``, ``y`` ``(batch, out_h, out_w,
    channels)`` with ``out = (in - size) // stride + 1``. The gradient of each
    window goes to one input, its first largest entry in row-major order (ties
    and all, as PyTorch does), so it is never split or counted twice.
    """

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        ho, wo, pieces = self._windows(x)
        y, wins = _running_max(xp, pieces, train)

        def backward(dy):
            # the last entry that beat every entry before it is the window's first
            # largest one: walking back from the last entry, each winner takes what is
            # left of dy, and entry 0 what no later entry took
            beat = wins if wins is not None else _running_max(xp, pieces, True)[1]
            routed, left = [None] * len(pieces), dy
            for e in range(len(pieces) - 1, 0, -1):
                routed[e] = xp.astype(beat[e - 1], dy.dtype) * left  # faster than where()
                left = left - routed[e]
            routed[0] = left
            return self._scatter(x, lambda e: routed[e])

        return y, backward


def _running_max(xp, pieces, wins: bool):
    """The elementwise maximum of ``pieces`` (one pass each) and, with ``wins``, for each
    entry ``e >= 1`` where it is larger than every entry before it (ties stay with the
    earlier entry), else None."""
    y, beat = pieces[0], []
    for p in pieces[1:]:
        if wins:
            beat.append(p > y)
        y = xp.maximum(y, p)
    return y, beat if wins else None


class AvgPool2D(_Pool2D):
    """Mean of each ``size x size`` window, per channel.

    ``x`` is ``(batch, height, width, channels)``, ``y`` ``(batch, out_h, out_w,
    channels)`` with ``out = (in - size) // stride + 1``; each of the window's
    ``size*size`` inputs gets ``dy / size**2``.
    """

    def forward(self, x, *, train=False):
        ho, wo, pieces = self._windows(x)
        total = pieces[0]
        for p in pieces[1:]:
            total = total + p
        scale = 1.0 / len(pieces)

        def backward(dy):
            share = dy * scale
            return self._scatter(x, lambda e: share)

        return total * scale, backward


class GlobalAvgPool2D(Layer):
    """Mean over height and width: ``(batch, height, width, channels)`` -> ``(batch, channels)``.

    Each input gets ``dy / (height * width)`` of its channel.
    """

    def output_shape(self, shape):
        """``(c,)`` for inputs ``(h, w, c)``."""
        return (images_in(self.name, shape)[2],)

    def forward(self, x, *, train=False):
        check_images(self, x)
        xp = array_namespace(x)
        hw = x.shape[1] * x.shape[2]
        y = xp.mean(x, axis=(1, 2))

        def backward(dy):
            share = dy * (1.0 / hw)
            return xp.zeros(tuple(x.shape), dtype=dy.dtype, device=device_of(dy)) + share[
                :, None, None, :]

        return y, backward
