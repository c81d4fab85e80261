"""What the image layers share: images are ``(batch, height, width, channels)``.

- :func:`check_images`: the one input check of every image layer;
- :func:`padding_for` / :func:`out_size`: the sizes of a sliding window;
- :func:`im2col` / :func:`col2im`: a convolution's columns and their transpose on the
  Array API (the standard has no ``pad``, ``as_strided`` or scatter, so each window
  entry is a strided slice copied into one buffer by slice assignment, and the
  backward pass adds into slices);
- :func:`window`, :func:`add_window`: one window entry of every window, and its
  transpose (pooling);
- :func:`infer_shapes`: per-example shapes through a stack, checked at build time.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from ..arguments import whole_number
from ..errors import ConfigError, DataError

LAYOUT = "(batch, height, width, channels)"


def positive_int(owner: str, what: str, value) -> int:
    """``value`` as a positive int, or a ConfigError naming ``owner`` and ``what``."""
    return whole_number(value, f"{owner} {what}")


def check_images(layer, x, channels: int | None = None) -> None:
    """Raise DataError unless ``x`` is ``(batch, height, width, channels)``."""
    want = f"(batch, height, width, {channels if channels else 'channels'})"
    if x.ndim != 4:
        hint = (" (a single channel still needs its axis: x[..., None])" if x.ndim == 3
                else "; images are (batch, height, width, channels)")
        raise DataError(f"layer {layer.name!r} expects images of shape {want}, got shape "
                        f"{tuple(x.shape)}{hint}")
    if channels is not None and x.shape[3] != channels:
        raise DataError(f"layer {layer.name!r} expects images of shape {want}, got shape "
                        f"{tuple(x.shape)}: {x.shape[3]} channels instead of {channels}")


def padding_for(padding, size: int, k: int, stride: int) -> tuple[int, int]:
    """Zeros added ``(before, after)`` along one spatial axis of length ``size``.

    ``"same"`` gives ``ceil(size / stride)`` outputs (the extra zero of an even
    kernel goes after, as in Keras and PyTorch), ``"valid"`` none, an int ``p``
    ``p`` on each side.
    """
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        return total // 2, total - total // 2
    return padding, padding


def out_size(padded: int, k: int, stride: int) -> int:
    """Window positions along an axis of ``padded`` entries (0 when ``k > padded``)."""
    return (padded - k) // stride + 1 if padded >= k else 0


def window_output(layer, hw, k: int, stride: int, padding=0, error=DataError):
    """``(top, bottom, left, right, out_h, out_w)`` of a k x k window over ``hw`` images.

    Raises ``error`` naming the layer when the window does not fit.
    """
    (h, w) = hw
    top, bottom = padding_for(padding, h, k, stride)
    left, right = padding_for(padding, w, k, stride)
    ho, wo = out_size(h + top + bottom, k, stride), out_size(w + left + right, k, stride)
    if ho == 0 or wo == 0:
        padded = (f" ({h + top + bottom}x{w + left + right} after padding)"
                  if top + bottom + left + right else "")
        raise error(f"layer {layer.name!r}: its {k}x{k} window does not fit images of "
                    f"{h}x{w}{padded}: the spatial size would shrink to zero; use smaller "
                    f"kernels or pools, padding='same', or larger images")
    return top, bottom, left, right, ho, wo


def _spans(i: int, j: int, stride: int, ho: int, wo: int):
    return (slice(i, i + stride * (ho - 1) + 1, stride),
            slice(j, j + stride * (wo - 1) + 1, stride))


def window(x, i: int, j: int, stride: int, ho: int, wo: int):
    """Entry ``(i, j)`` of every window: ``x[:, i + stride*r, j + stride*s, :]``,
    shape ``(batch, ho, wo, channels)`` (a strided slice, no copy)."""
    rows, cols = _spans(i, j, stride, ho, wo)
    return x[:, rows, cols, :]


def add_window(dx, i: int, j: int, stride: int, d, *, disjoint: bool = False) -> None:
    """The transpose of :func:`window`: add ``d`` ``(batch, ho, wo, c)`` into ``dx``
    in place (overlapping windows accumulate). ``disjoint``: no other window entry
    touches these positions and ``dx`` is zero there, so ``d`` is written, not added
    (one read fewer)."""
    rows, cols = _spans(i, j, stride, d.shape[1], d.shape[2])
    if disjoint:
        dx[:, rows, cols, :] = d
    else:
        dx[:, rows, cols, :] += d


def _span(i: int, before: int, stride: int, n_out: int, n_in: int):
    """Outputs ``[first, last)`` whose window entry ``i`` reads a real input row (not
    padding): ``r * stride + i - before`` in ``[0, n_in)``; and the slice of those rows."""
    first = min(max(0, -((i - before) // stride)), n_out)  # ceil((before - i) / stride)
    last = max(min(n_out, (n_in - 1 - i + before) // stride + 1), first)
    if last == first:
        return first, first, slice(0, 0)
    start = first * stride + i - before
    return first, last, slice(start, start + stride * (last - first - 1) + 1, stride)


def _entries(k: int, stride: int, before, out, hw):
    """For each window entry ``e = i*k + j``: ``(e, output rows, output columns, input
    rows, input columns)`` of the outputs that read real inputs, and the output strips
    ``[(rows, columns), ...]`` that read padding."""
    for i in range(k):
        r0, r1, rows = _span(i, before[0], stride, out[0], hw[0])
        for j in range(k):
            c0, c1, cols = _span(j, before[1], stride, out[1], hw[1])
            pads = [(slice(0, r0), slice(None)), (slice(r1, None), slice(None)),
                    (slice(r0, r1), slice(0, c0)), (slice(r0, r1), slice(c1, None))]
            sizes = [r0, out[0] - r1, c0 * (r1 - r0), (out[1] - c1) * (r1 - r0)]
            pads = [p for p, size in zip(pads, sizes) if size]  # no empty writes
            yield i * k + j, slice(r0, r1), slice(c0, c1), rows, cols, pads


def im2col(x, k: int, stride: int, before, out, *, ones: bool = False):
    """The ``k x k`` windows of ``x`` ``(batch, h, w, c)``, zero-padded by ``before =
    (top, left)``, side by side: ``cols`` ``(batch*out_h*out_w, k*k*c [+ 1])``, column
    ``(i*k + j)*c + ch`` of row ``(b, r, s)`` holding ``xpad[b, r*stride + i, s*stride + j,
    ch]``; ``ones`` adds a last column of ones (the bias's input, so that one matmul
    adds the bias and its transpose sums ``db``).

    One buffer written by slice assignment: each entry copies the inputs its windows
    read and writes zeros where they read padding, so no padded copy of ``x`` is made.
    With one channel the buffer is ``(k*k [+ 1], batch, out_h, out_w)`` and ``cols`` its
    transpose, so that each copy runs along image rows instead of one value at a time.
    """
    xp = array_namespace(x)
    b, h, w, c = x.shape
    (ho, wo), kk = out, k * k
    n, width = b * ho * wo, kk * c + (1 if ones else 0)
    dev = device_of(x)
    if c == 1:
        buf, src = xp.empty((width, b, ho, wo), dtype=x.dtype, device=dev), x[..., 0]

        def at(e, rows, cols):
            return e, slice(None), rows, cols
    else:
        buf, src = xp.empty((b, ho, wo, width), dtype=x.dtype, device=dev), x

        def at(e, rows, cols):
            return slice(None), rows, cols, slice(e * c, (e + 1) * c)
    for e, rows, cols, in_rows, in_cols, pads in _entries(k, stride, before, out, (h, w)):
        buf[at(e, rows, cols)] = src[:, in_rows, in_cols, ...]
        for pad_rows, pad_cols in pads:
            buf[at(e, pad_rows, pad_cols)] = 0.0
    if ones:  # the last column
        if c == 1:
            buf[kk, ...] = 1.0
        else:
            buf[..., kk * c] = 1.0
    return xp.reshape(buf, (width, n)).mT if c == 1 else xp.reshape(buf, (n, width))


def col2im(block, shape, k: int, stride: int, before, out):
    """The transpose of :func:`im2col`: ``dx`` of ``shape`` ``(batch, h, w, c)`` from the
    column blocks ``block(e)`` ``(batch, out_h, out_w, c)`` of window entries ``e = i*k +
    j``, each block's values added where its entry read a real input (overlapping
    windows accumulate; what fell on padding is dropped). Asking for one block at a
    time keeps one block alive, not all ``k*k``."""
    dx = None
    for e, rows, cols, in_rows, in_cols, _ in _entries(k, stride, before, out, shape[1:3]):
        d = block(e)
        if dx is None:
            xp = array_namespace(d)
            dx = xp.zeros(shape, dtype=d.dtype, device=device_of(d))
        dx[:, in_rows, in_cols, :] += d[:, rows, cols, :]
    return dx


def reshapes(layer) -> bool:
    """True for a layer whose output size ``n_out`` does not describe (Conv2D, pooling,
    Flatten): sizes before and after it are unrelated."""
    return hasattr(layer, "output_shape") and layer.n_out is None


def infer_shapes(layers, input_shape) -> list[tuple]:
    """Per-example shape after each layer of ``layers`` for inputs ``input_shape``.

    ``input_shape`` is ``(height, width, channels)`` for images or ``(features,)``.
    Layers with an ``output_shape(shape)`` method compute (and check) their own,
    and may complete their configuration from it (a Conv2D without
    ``in_channels``); any other layer either has sizes (``n_in``/``n_out``:
    input ``(n_in,)``, output ``(n_out,)``) or keeps its input's shape.
    Raises ConfigError naming the first layer that does not fit.
    """
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape must be a tuple of positive integers such as "
                          f"(28, 28, 1), got {input_shape!r}") from None
    if len(shape) not in (1, 3) or any(s <= 0 for s in shape):
        raise ConfigError(f"input_shape must be (height, width, channels) for images or "
                          f"(features,), got {input_shape!r}")
    shapes = []
    for layer in layers:
        if hasattr(layer, "output_shape"):
            shape = tuple(layer.output_shape(shape))
        elif layer.n_in is not None or layer.n_out is not None:
            if layer.n_in is not None and shape != (layer.n_in,):
                flat = (" (add a Flatten or GlobalAvgPool2D layer before it)"
                        if len(shape) == 3 else "")
                raise ConfigError(f"layer {layer.name!r} expects {layer.n_in} features but "
                                  f"the layer before it gives shape {shape}{flat}")
            shape = (layer.n_out,) if layer.n_out is not None else shape
        shapes.append(shape)
    return shapes


def images_in(name: str, shape: tuple) -> tuple[int, int, int]:
    """``shape`` as ``(h, w, c)``, or a ConfigError saying ``name`` needs images."""
    if len(shape) != 3:
        raise ConfigError(f"layer {name!r} expects images (height, width, channels) but "
                          f"the layer before it gives shape {tuple(shape)}")
    return shape
