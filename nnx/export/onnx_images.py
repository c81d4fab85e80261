"""ONNX mappings of the image layers: Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten.

nnx's images are ``(batch, height, width, channels)`` and so is the exported
graph's input; ONNX's Conv and pooling take ``(batch, channels, height, width)``.
The graph transposes once before the first of a run of image layers and once
after it (before Flatten, a Dense, or the output), never around each layer:

- Conv2D -> ``Conv`` with the kernel ``w`` ``(k, k, C_in, F)`` stored as
  ``(F, C_in, k, k)``, the strides, and nnx's padding: ``"same"`` as explicit pads
  (the extra zero of an even kernel after, as nnx adds it), ``"valid"`` none,
  an int ``p`` on each side;
- MaxPool2D / AvgPool2D -> ``MaxPool`` / ``AveragePool`` without padding (windows
  that would run past the edge are left out, as in nnx);
- GlobalAvgPool2D -> ``GlobalAveragePool`` and ``Flatten``: ``(batch, channels)``;
- Flatten -> back to channels-last, then ``Flatten``: the row order of nnx's
  (height, width, channels), so the Dense weights after it need no change.

A float64 model exports in float64, but onnxruntime's CPU provider has float32
kernels only for Conv, AveragePool and GlobalAveragePool: export such a model
in float32 (``nnx.load(path, dtype="float32")``) to run it there.
"""

from __future__ import annotations

import numpy as np

from .onnx_export import Graph, register_onnx


def _pads(g: Graph, layer) -> dict:
    """Conv padding attributes: explicit ``pads`` (top, left, bottom, right) when the
    input size is known, else ONNX's SAME_UPPER, which puts the extra zero after too."""
    if layer.padding == "valid":
        return {"pads": [0, 0, 0, 0]}
    if layer.padding != "same":
        p = int(layer.padding)
        return {"pads": [p, p, p, p]}
    if g.shape is None or len(g.shape) != 3:
        return {"auto_pad": "SAME_UPPER"}
    from ..layers.images import padding_for

    k, s = layer.kernel_size, layer.stride
    top, bottom = padding_for("same", g.shape[0], k, s)
    left, right = padding_for("same", g.shape[1], k, s)
    return {"pads": [top, left, bottom, right]}


def _conv2d(g: Graph, layer, weights: dict, x: str) -> str:
    k, s = layer.kernel_size, layer.stride
    kernel = np.transpose(weights["w"], (3, 2, 0, 1))  # (k, k, C, F) -> (F, C, k, k)
    inputs = [g.nchw(x), g.const(f"{layer.name}.w", kernel)]
    if layer.bias:
        inputs.append(g.const(f"{layer.name}.b", weights["b"]))
    return g.op("Conv", inputs, layer.name, kernel_shape=[k, k], strides=[s, s],
                **_pads(g, layer))


def _pool(op_type: str):
    def emit(g: Graph, layer, weights: dict, x: str) -> str:
        return g.op(op_type, [g.nchw(x)], layer.name, kernel_shape=[layer.size, layer.size],
                    strides=[layer.stride, layer.stride])

    return emit


def _global_avg_pool(g: Graph, layer, weights: dict, x: str) -> str:
    pooled = g.op("GlobalAveragePool", [g.nchw(x)], layer.name)  # (batch, C, 1, 1)
    g.layout = "rows"
    return g.op("Flatten", [pooled], layer.name, axis=1)


def _flatten(g: Graph, layer, weights: dict, x: str) -> str:
    if g.layout == "rows":
        return x
    x = g.channels_last(x)  # rows in (height, width, channels) order, as nnx flattens
    g.layout = "rows"
    return g.op("Flatten", [x], layer.name, axis=1)


register_onnx("Conv2D", _conv2d)
register_onnx("MaxPool2D", _pool("MaxPool"))
register_onnx("AvgPool2D", _pool("AveragePool"))
register_onnx("GlobalAvgPool2D", _global_avg_pool)
register_onnx("Flatten", _flatten)
