"""Convolution fast paths: a library's own convolution for ``Conv2D``, where it has one.

Conv2D's portable path (im2col and one matmul, nnx/layers/conv2d.py) runs on every
library. On PyTorch tensors it calls torch's convolution instead (oneDNN on the CPU,
cuDNN on a GPU) on the same (batch, height, width, channels) arrays, viewed as
channels-last NCHW, so nothing is copied into another layout. The sums are the same
in another order: results equal the portable path's within float rounding
(tests/test_fast_paths.py), not bitwise. Only symmetric padding takes the fast path
(an even kernel's "same" padding does not).

On NumPy arrays only the im2col differs (:func:`numpy_im2col`): the same columns,
bitwise, copied in one pass from a view of all the windows
(``sliding_window_view``), which the standard does not have; the portable path
copies one kernel entry at a time, ``channels`` values per window. And max-pooling
takes a NumPy batch in chunks (:func:`batch_parts`) that stay in the cache across
its passes. Set ``ENABLED = False`` to use the portable path everywhere.
"""

from __future__ import annotations

from array_api_compat import is_numpy_array, is_torch_array

#: switch for every fast convolution (tests compare both paths)
ENABLED = True

#: bytes of input per chunk of :func:`batch_parts`: about half a core's L2 cache
CHUNK_BYTES = 1 << 20


def for_array(x):
    """The fast convolution for ``x``'s library (:class:`TorchConv`), or None."""
    if ENABLED and is_torch_array(x):
        return TorchConv
    return None


def im2col_for(x):
    """The library's own im2col for ``x`` (:func:`numpy_im2col`), or None."""
    if ENABLED and is_numpy_array(x):
        return numpy_im2col
    return None


def batch_parts(x) -> list:
    """Slices of the batch axis of ``x`` ``(batch, ...)`` for a layer that makes several
    elementwise passes over it: on NumPy about ``CHUNK_BYTES`` each, so that the
    passes over one chunk read the cache instead of memory; ``[None]`` (the whole batch
    at once) elsewhere, where a GPU wants few, large kernels."""
    if not (ENABLED and is_numpy_array(x)) or x.nbytes <= CHUNK_BYTES:
        return [None]
    n = x.shape[0]
    step = max(1, CHUNK_BYTES * n // x.nbytes)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def numpy_im2col(x, k: int, stride: int, before, out, *, ones: bool = False):
    """``nnx.layers.images.im2col`` on NumPy: ``cols`` ``(batch*out_h*out_w, k*k*c [+ 1])``
    of ``x`` ``(batch, h, w, c)`` zero-padded by ``before = (top, left)``, bitwise the
    same. One copy from the windows' view ``(batch, out_h, out_w, k, k, c)``, whose last
    ``k*c`` values (a window row) are contiguous, into the same view of ``cols``."""
    import numpy as np
    from numpy.lib.stride_tricks import as_strided, sliding_window_view

    b, h, w, c = x.shape
    (ho, wo), (top, left) = out, before
    # the rows and columns the windows read, zeros where they fall outside x
    hp, wp = (ho - 1) * stride + k, (wo - 1) * stride + k
    xpad = np.zeros((b, hp, wp, c), dtype=x.dtype)
    rows, cols = max(0, min(h, hp - top)), max(0, min(w, wp - left))
    xpad[:, top:top + rows, left:left + cols, :] = x[:, :rows, :cols, :]
    windows = sliding_window_view(xpad, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    width = k * k * c + (1 if ones else 0)
    buf = np.empty((b, ho, wo, width), dtype=x.dtype)
    size = buf.itemsize
    # the first k*k*c columns of each row, as (k, k, c): a view into buf, written in place
    target = as_strided(buf, shape=(b, ho, wo, k, k, c),
                        strides=buf.strides[:3] + (k * c * size, c * size, size))
    target[...] = windows.transpose(0, 1, 2, 4, 5, 3)
    if ones:  # the bias's column
        buf[..., -1] = 1.0
    return buf.reshape(b * ho * wo, width)


class TorchConv:
    """torch's convolution on NHWC tensors with nnx's (k, k, C_in, F) weights."""

    @staticmethod
    def forward(x, w, b, stride: int, padding: tuple[int, int]):
        """``y`` ``(batch, out_h, out_w, F)`` of ``x`` ``(batch, h, w, C_in)``; ``padding``
        is (rows, columns) of zeros on each side."""
        import torch.nn.functional as F

        # the weights are small: a contiguous (F, C_in, k, k) copy suits every kernel
        y = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1).contiguous(), b,
                     stride=stride, padding=padding)
        return y.permute(0, 2, 3, 1)

    @staticmethod
    def backward(dy, x, w, stride: int, padding: tuple[int, int], need_dx: bool,
                 bias: bool):
        """``(dx or None, dw (k, k, C_in, F), db or None)`` for upstream ``dy`` (NHWC)."""
        import torch

        wt = w.permute(3, 2, 0, 1).contiguous()  # some kernels (slow_conv2d) need it
        dx, dw, db = torch.ops.aten.convolution_backward(
            dy.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2), wt,
            [wt.shape[0]] if bias else None, [stride, stride], list(padding), [1, 1], False,
            [0, 0], 1, [need_dx, True, bias])
        return (dx.permute(0, 2, 3, 1) if need_dx else None, dw.permute(2, 3, 1, 0),
                db if bias else None)
