"""Convolution fast paths: a library's own convolution for ``Conv2D``, where it has one.

Conv2D's portable path (im2col and one matmul, nnx/layers/conv2d.py) runs on every
library. On PyTorch tensors it calls torch's convolution instead (oneDNN on the CPU,
cuDNN on a GPU) on the same (batch, height, width, channels) arrays, viewed as
channels-last NCHW, so nothing is copied into another layout. The sums are the same
in another order: results equal the portable path's within float rounding
(tests/test_fast_paths.py), not bitwise. Only symmetric padding takes the fast path
(an even kernel's "same" padding does not). Set ``ENABLED = False`` to use the
portable path everywhere.
"""

from __future__ import annotations

from array_api_compat import is_torch_array

#: switch for every fast convolution (tests compare both paths)
ENABLED = True


def for_array(x):
    """The fast convolution for ``x``'s library (:class:`TorchConv`), or None."""
    if ENABLED and is_torch_array(x):
        return TorchConv
    return None


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
