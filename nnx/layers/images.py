"""What the image layers share: images are ``(batch, height, width, channels)``.

- :func:`check_images`: the one input check of every image layer;
- :func:`padding_for` / :func:`out_size`: the sizes of a sliding window;
- :func:`zero_pad`, :func:`window`, :func:`add_window`: im2col's pieces on the Array
  API (the standard has no ``pad``, ``as_strided`` or scatter, so padding is a
  ``concat`` with zeros, a window position is a strided slice, and the backward
  pass adds into slices);
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


def zero_pad(x, top: int, bottom: int, left: int, right: int):
    """``x`` ``(batch, h, w, c)`` with zero rows and columns around it (by ``concat``)."""
    if not (top or bottom or left or right):
        return x
    xp = array_namespace(x)
    b, h, w, c = x.shape
    dev = device_of(x)
    if top or bottom:
        x = xp.concat([xp.zeros((b, top, w, c), dtype=x.dtype, device=dev), x,
                       xp.zeros((b, bottom, w, c), dtype=x.dtype, device=dev)], axis=1)
    if left or right:
        hp = x.shape[1]
        x = xp.concat([xp.zeros((b, hp, left, c), dtype=x.dtype, device=dev), x,
                       xp.zeros((b, hp, right, c), dtype=x.dtype, device=dev)], axis=2)
    return x


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


def crop(x, top: int, left: int, h: int, w: int):
    """``x[:, top:top+h, left:left+w, :]``: undoes :func:`zero_pad` for a gradient."""
    if top == 0 and left == 0 and x.shape[1] == h and x.shape[2] == w:
        return x
    return x[:, top:top + h, left:left + w, :]


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
