"""A model's summary: one row per layer with its output shape and parameter count.

``model.summary()`` prints it, as Keras users expect; :func:`summary_lines` returns the
lines. Output shapes come from :func:`~nnx.layers.images.infer_shapes`; parameter
counts from the parameters themselves (an uninitialised model is counted on a copy
initialised on NumPy).
"""

from __future__ import annotations

import copy
import math

__all__ = ["summary_lines"]

_NOTE_KEYS = ("activation", "p", "filters", "kernel_size", "size")


def _kind(layer) -> str:
    config = layer.config()
    notes = [f"{k}={config[k]}" if k != "activation" else str(config[k])
             for k in _NOTE_KEYS if k in config]
    name = type(layer).__name__
    return f"{name} {' '.join(notes)}" if notes else name


def _shapes(model) -> list:
    from .images import infer_shapes

    start = model.input_shape or ((model.n_in,) if model.n_in else None)
    if start is None:
        return [None] * len(model.layers)
    return infer_shapes(model.layers, start)


def _counted(model):
    """``model`` if it has parameters, else an initialised copy (counting only)."""
    if model.backend is not None:
        return model
    return copy.deepcopy(model).init("numpy", 0)


def _size(arrays) -> int:
    return sum(math.prod(tuple(a.shape)) for a in arrays)


def summary_lines(model) -> list[str]:
    """The table's lines: layer (type), output shape ``(None, ...)``, parameter count,
    then the totals (trainable parameters, buffers such as BatchNorm's running
    statistics, and their size in the model's dtype)."""
    counted = _counted(model)
    rows = [("Layer (type)", "Output shape", "Param #")]
    total = buffers = 0
    for layer, shape in zip(counted.layers, _shapes(model)):
        n = _size(layer.params.values())
        total += n
        buffers += _size(layer.state.values())
        shown = "?" if shape is None else str((None, *shape))
        rows.append((f"{layer.name} ({_kind(layer)})", shown, f"{n:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "=" * (sum(widths) + 4)
    def fmt(r):
        return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"

    itemsize = 8 if model.dtype == "float64" else 4
    out = [fmt(rows[0]), line, *(fmt(r) for r in rows[1:]), line,
           f"Total params: {total:,} ({total * itemsize / 1024:,.1f} KiB in {model.dtype})"]
    if buffers:
        out.append(f"Buffers (running statistics, not trained): {buffers:,}")
    start = model.input_shape or ((model.n_in,) if model.n_in else None)
    if start is not None:
        out.append(f"Input shape: {(None, *start)}")
    return out
