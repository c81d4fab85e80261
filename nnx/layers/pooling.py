"""Pooling over images ``(batch, height, width, channels)``: max, average, global average.

The windows are the ``size*size`` strided slices of the input (no padding:
windows that would run past the edge are left out, as in Keras' and PyTorch's
default); the backward pass adds each slice's gradient back where it came from.
"""

from __future__ import annotations

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from ..backends import conv_fast
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

    def _new_dx(self, x):
        """A gradient array of ``x``'s shape for :meth:`_scatter_into` to fill."""
        xp = array_namespace(x)
        k, s = self.size, self.stride
        ho, wo = out_size(x.shape[1], k, s), out_size(x.shape[2], k, s)
        # windows that tile x exactly write every entry once: nothing to zero first
        tiles = s == k and x.shape[1] == ho * k and x.shape[2] == wo * k
        return (xp.empty if tiles else xp.zeros)(tuple(x.shape), dtype=x.dtype,
                                                 device=device_of(x))

    def _scatter_into(self, dx, pieces) -> None:
        """Add each ``pieces[i*k + j]`` back into ``dx`` at window entry (i, j)."""
        k = self.size
        for i in range(k):
            for j in range(k):
                add_window(dx, i, j, self.stride, pieces[i * k + j],
                           disjoint=self.stride >= k)

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
        check_images(self, x)
        # on NumPy a chunk of the batch at a time, so that its passes read the cache
        parts = [(b, self._windows(_part(x, b))[2]) for b in conv_fast.batch_parts(x)]
        runs = [_running_max(xp, pieces, train) for _, pieces in parts]
        y = runs[0][0] if len(runs) == 1 else xp.concat([r[0] for r in runs], axis=0)

        def backward(dy):
            dx = self._new_dx(x)
            for (b, pieces), (_, wins) in zip(parts, runs):
                beat = wins if wins is not None else _running_max(xp, pieces, True)[1]
                self._scatter_into(_part(dx, b), _route(xp, beat, _part(dy, b)))
            return dx

        return y, backward


def _part(a, batch):
    """``a[batch]`` (a view), or ``a`` itself for ``batch`` None."""
    return a if batch is None else a[batch, ...]


def _route(xp, beat, dy) -> list:
    """``dy`` of each window sent to its first largest entry, as one array per entry:
    that is the last entry that beat every entry before it, so walking back from the
    last entry each winner takes what is left of dy, and entry 0 what no later one took."""
    routed, left = [None] * (len(beat) + 1), dy
    for e in range(len(beat), 0, -1):
        routed[e] = xp.astype(beat[e - 1], dy.dtype) * left  # faster than where()
        left = left - routed[e]
    routed[0] = left
    return routed


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
            dx = self._new_dx(x)
            self._scatter_into(dx, [dy * scale] * len(pieces))
            return dx

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
