"""2-D convolution on images ``(batch, height, width, channels)``, as im2col and one matmul.

Forward: lay the ``k*k`` shifted (strided) slices of the zero-padded input, one per
kernel entry, side by side as the columns of ``cols`` ``(batch*out_h*out_w,
k*k*C_in)`` (:func:`~nnx.layers.images.im2col`), with a column of ones for the
bias; then ``y = [cols 1] @ [w; b]``. Backward: ``[dw; db] = [cols 1]^T dy``,
``dcols = dy w^T``, and ``dx`` adds each of the ``k*k`` column blocks back into
the slice it came from (:func:`~nnx.layers.images.col2im`). The buffers live
for one batch only. On PyTorch tensors the library's own convolution computes the
same sums (``nnx.backends.conv_fast``; symmetric padding only); on NumPy arrays of
two or more channels its im2col copies every window at once, bitwise the same.
"""

from __future__ import annotations

from ..backends import array_namespace, conv_fast
from ..errors import ConfigError
from ..initializers import get_initializer
from .base import Layer
from .images import check_images, col2im, im2col, images_in, positive_int, window_output


class Conv2D(Layer):
    """``filters`` learned ``k x k`` filters over images ``(batch, height, width, channels)``.

    ``y[b, r, s, f] = sum_{i, j, c} xpad[b, r*stride + i, s*stride + j, c] * w[i, j, c, f]
    + b[f]``, with ``w`` of shape ``(k, k, in_channels, filters)`` and ``b``
    ``(filters,)``. Output ``(batch, out_h, out_w, filters)``.

    Parameters
    ----------
    filters : output channels.
    kernel_size : ``k`` (square kernels).
    stride : step between windows.
    padding : ``"same"`` (``ceil(h / stride)`` outputs), ``"valid"`` (none) or zeros per side.
    bias : add ``b`` (initialised to zero).
    init : initialiser for ``w``; ``"auto"`` is He for the ReLU family, Xavier otherwise,
        with fan-in ``k*k*in_channels`` and fan-out ``k*k*filters``.
    family : activation family that follows the layer, used by ``init="auto"``.
    in_channels : input channels; left out, it is set from the model's ``input_shape``
        (``Sequential(..., input_shape=(h, w, c))``) before ``init``.
    """

    skips_dx = True

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, padding="same",
                 bias: bool = True, init: str = "auto", *, family: str = "relu",
                 in_channels: int | None = None) -> None:
        super().__init__()
        self.filters = positive_int("Conv2D", "filters", filters)
        self.kernel_size = positive_int("Conv2D", "kernel_size", kernel_size)
        self.stride = positive_int("Conv2D", "stride", stride)
        if not (padding in ("same", "valid") or (isinstance(padding, int)
                                                 and not isinstance(padding, bool)
                                                 and padding >= 0)):
            raise ConfigError(f"Conv2D padding must be 'same', 'valid' or a number of zeros "
                              f"(>= 0) per side, got {padding!r}")
        self.padding = padding
        self.in_channels = (None if in_channels is None
                            else positive_int("Conv2D", "in_channels", in_channels))
        self.init_name, self.family, self.bias = init, family, bias
        get_initializer(init, family)  # fail early on a bad name

    def output_shape(self, shape):
        """``(out_h, out_w, filters)`` for inputs ``(h, w, c)``; sets ``in_channels``."""
        h, w, c = images_in(self.name, shape)
        if self.in_channels is None:
            self.in_channels = c
        elif c != self.in_channels:
            raise ConfigError(f"layer {self.name!r} expects {self.in_channels} input channels "
                              f"but the layer before it gives shape {tuple(shape)}")
        *_, ho, wo = window_output(self, (h, w), self.kernel_size, self.stride, self.padding,
                                   ConfigError)
        return ho, wo, self.filters

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        if self.in_channels is None:
            raise ConfigError(f"layer {self.name!r} does not know its input channels: give "
                              "Conv2D(..., in_channels=C) or build the model with "
                              "Sequential(layers, input_shape=(height, width, channels))")
        k, c, f = self.kernel_size, self.in_channels, self.filters
        _, draw = get_initializer(self.init_name, self.family)
        self.params["w"] = backend.asarray(draw(rng, (k, k, c, f), k * k * c, k * k * f), dtype)
        if self.bias:
            self.params["b"] = backend.xp.zeros((f,), dtype=backend.dtype(dtype),
                                                device=backend.device)
        self.zero_grads()

    def _columns(self, x):
        """im2col of ``x``: ``cols`` ``(batch*out_h*out_w, k*k*C [+ 1])``, columns ordered
        (i, j, c) like ``w`` reshaped to ``(k*k*C, filters)``, then a column of ones with
        a bias; also the padding before (top, left) and the output size (out_h, out_w)."""
        k, s = self.kernel_size, self.stride
        top, _, left, _, ho, wo = window_output(self, tuple(x.shape[1:3]), k, s, self.padding)
        # the library's own (NumPy: one copy of every window) from two channels on; one
        # channel is faster the portable way (a buffer of whole image rows)
        own = conv_fast.im2col_for(x) if x.shape[3] > 1 else None
        cols = (own or im2col)(x, k, s, (top, left), (ho, wo), ones=self.bias)
        return cols, (top, left), (ho, wo)

    def forward(self, x, *, train=False):
        check_images(self, x, self.in_channels)
        fast = conv_fast.for_array(x)
        if fast is not None:
            top, bottom, left, right, *_ = window_output(self, tuple(x.shape[1:3]),
                                                         self.kernel_size, self.stride,
                                                         self.padding)
            if top == bottom and left == right:
                return self._fast_forward(fast, x, (top, left))
        xp = array_namespace(x)
        bsz, c, k, f = x.shape[0], x.shape[3], self.kernel_size, self.filters
        cols, before, (ho, wo) = self._columns(x)
        w = xp.reshape(self.params["w"], (k * k * c, f))
        # the bias is the weight of cols' column of ones: y = [cols 1] @ [w; b]
        wb = xp.concat([w, xp.reshape(self.params["b"], (1, f))]) if self.bias else w
        y = xp.matmul(cols, wb)
        # evaluation keeps only x (cols are the largest buffer); a backward rebuilds them
        kept = cols if train else None
        del cols

        def backward(dy, need_dx=True):
            dy2 = xp.reshape(dy, (bsz * ho * wo, f))
            cols = kept if kept is not None else self._columns(x)[0]
            # [dw; db] = [cols 1]^T dy: summed over every output position of the batch
            dwb = xp.matmul(cols.mT, dy2)
            self.grads["w"] += xp.reshape(dwb[:k * k * c, ...], (k, k, c, f))
            if self.bias:
                self.grads["b"] += dwb[k * k * c, ...]
            if not need_dx:
                return None
            # dcols = dy w^T, one (batch, ho, wo, c) block dy w_e^T per kernel entry e =
            # (i, j), each added back where its slice came from while it is in cache
            w_e = xp.permute_dims(xp.reshape(w, (k * k, c, f)), (0, 2, 1))

            def block(e):
                return xp.reshape(xp.matmul(dy2, w_e[e, ...]), (bsz, ho, wo, c))

            return col2im(block, tuple(x.shape), k, self.stride, before, (ho, wo))

        return xp.reshape(y, (bsz, ho, wo, f)), backward

    def _fast_forward(self, fast, x, padding):
        """The same convolution by the library's own kernels (``backends/conv_fast.py``)."""
        w, b = self.params["w"], self.params["b"] if self.bias else None
        y = fast.forward(x, w, b, self.stride, padding)

        def backward(dy, need_dx=True):
            dx, dw, db = fast.backward(dy, x, w, self.stride, padding, need_dx, self.bias)
            self.grads["w"] += dw
            if self.bias:
                self.grads["b"] += db
            return dx

        return y, backward

    def config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding, "bias": self.bias,
                "init": self.init_name, "family": self.family, "in_channels": self.in_channels}

