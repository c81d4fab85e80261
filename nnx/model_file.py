"""What every reader of a model file checks before it allocates anything.

A model file (``.npz`` model or checkpoint, ``.safetensors``) declares an
architecture (a ``model.config()``) and holds arrays by name. A file that was
damaged or edited may declare a network far larger than the arrays it holds:
initialising that network would allocate its size before the arrays are ever
compared. So :func:`declared_model` builds the layers without parameters
(nothing is allocated) and :func:`check_declared` compares the shapes that the
built-in layers declare (Dense, Conv2D, BatchNorm; the layers without
parameters declare none) with the stored arrays, and refuses the file, naming
the first difference, before the model is initialised. A user's registered
layer cannot say its shapes ahead: its arrays are checked once it is built.
:func:`check_stored_values` refuses arrays that are not floats, or (unless
allowed) hold NaN or infinity.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .errors import CheckpointError, ConfigError

__all__ = ["declared_model", "declared_shapes", "check_declared", "check_stored_values",
           "memory_bytes"]


def declared_model(arch, path):
    """The Sequential that ``arch`` (from the file ``path``) describes, without parameters;
    a CheckpointError when it does not describe one."""
    from .layers import build

    if not (isinstance(arch, dict) and isinstance(arch.get("layers"), list)):
        raise CheckpointError(f"{path} is damaged (its architecture is not a model "
                              "configuration) and cannot be loaded; use an earlier file or "
                              "retrain")
    try:
        return build(arch)
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError, IndexError,
            OverflowError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the saved architecture ({exc}); was it "
                              "saved with a custom layer that is not registered here? Call "
                              "nnx.register_layer(cls) first") from None


def _layer_shapes(layer) -> dict | None:
    """``{"w": shape, ...}`` of a built-in layer before ``init``; None when not known."""
    from . import layers as L

    kind = type(layer)
    if kind is L.Dense:
        return {"w": (layer.n_in, layer.n_out), **({"b": (layer.n_out,)} if layer.bias else {})}
    if kind is L.Conv2D and layer.in_channels is not None:
        k, f = layer.kernel_size, layer.filters
        return {"w": (k, k, layer.in_channels, f), **({"b": (f,)} if layer.bias else {})}
    if kind is L.BatchNorm:
        n = (layer.n_in,)
        return {"gamma": n, "beta": n, "running_mean": n, "running_var": n}
    if kind in (L.ActivationLayer, L.MixedActivation, L.Dropout, L.Flatten, L.MaxPool2D,
                L.AvgPool2D, L.GlobalAvgPool2D):
        return {}
    return None


def declared_shapes(model) -> dict[str, tuple | None]:
    """``{"dense_0.w": (n_in, n_out), ...}`` that the built (not initialised) ``model``
    declares; a layer whose shapes are not known ahead maps ``"<name>.*"`` to None."""
    out: dict[str, tuple | None] = {}
    for layer in model.layers:
        shapes = _layer_shapes(layer)
        if shapes is None:
            out[f"{layer.name}.*"] = None
        else:
            out.update({f"{layer.name}.{k}": tuple(int(n) for n in v) for k, v in shapes.items()})
    return out


def _values(shape) -> str:
    return f"{math.prod(shape):,} values"


def check_declared(model, weights: dict, path, noun: str = "arrays") -> None:
    """CheckpointError unless ``weights`` (stored arrays by ``"dense_0.w"`` name) have the
    shapes the built, unallocated ``model`` declares, and no array belongs to no layer."""
    declared = declared_shapes(model)
    unknown = {k[:-2] for k, v in declared.items() if v is None}
    extra = sorted(k for k in weights if k not in declared and k.split(".", 1)[0] not in unknown)
    if extra:
        raise CheckpointError(f"{path} has {noun} this architecture does not: "
                              f"{', '.join(extra)}; the file is damaged or was saved from "
                              "another model")
    for key, shape in declared.items():
        if shape is None:
            continue
        if key not in weights:
            raise CheckpointError(f"{path} does not fit its architecture: it declares {key} "
                                  f"of shape {shape} ({_values(shape)}) but holds no such "
                                  "array; the file is damaged, nothing was allocated")
        stored = tuple(getattr(weights[key], "shape", ()))
        if stored != shape:
            raise CheckpointError(f"{path} does not fit its architecture: {key} has shape "
                                  f"{stored}, the architecture declares {shape} "
                                  f"({_values(shape)}); the file is damaged, nothing was "
                                  "allocated")


def check_stored_values(weights: dict, path, allow_nonfinite: bool = False) -> None:
    """CheckpointError for a stored array that is not of a float dtype or, unless
    ``allow_nonfinite``, holds NaN or infinity (a model that would predict NaN)."""
    for key, value in weights.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise CheckpointError(f"{path} is damaged: {key} is not an array of floats "
                                  f"({getattr(value, 'dtype', type(value).__name__)}); use "
                                  "an earlier file or retrain")
        if not allow_nonfinite and not np.isfinite(value).all():
            raise CheckpointError(f"{path} holds NaN or infinite values in {key}; such a "
                                  "model predicts nothing useful. Load it anyway with "
                                  "nnx.load(path, allow_nonfinite=True) to inspect it")


def memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
