"""Models as safetensors files: the weights as tensors, the nnx configuration as metadata.

Tensors are named as in ``model.get_weights()`` (``dense_0.w`` of shape
``(n_in, n_out)``, ``dense_0.b``, ``batchnorm_1.running_mean``, ...), in the
model's dtype. The header's string metadata holds ``format`` (``nnx-model``),
``version``, ``dtype``, ``architecture`` (the JSON of ``model.config()``) and,
when given, ``nnx`` (a JSON object of further settings). Any safetensors reader
opens the file (``safetensors.torch.load_file``); :func:`load_safetensors`
rebuilds the nnx model from it. Writes are atomic, and a model with NaN or
infinite weights is refused.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..extras import require

__all__ = ["to_safetensors", "load_safetensors", "read_safetensors"]

FORMAT = "nnx-model"
VERSION = 1


def to_safetensors(model, path, *, metadata: dict | None = None) -> None:
    """Write ``model``'s parameters and buffers to ``path`` (``.safetensors``), atomically.

    ``metadata`` is an optional JSON-serialisable dict stored beside the
    architecture (read back by :func:`read_safetensors`).
    """
    save = require("safetensors.numpy", "safetensors export").save
    if getattr(model, "backend", None) is None:
        raise ConfigError("the model has no parameters yet; train or load it before export")
    weights = {k: np.ascontiguousarray(v) for k, v in model.get_weights().items()}
    for key, value in weights.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(f"{key} holds NaN or infinite values, so the model was not "
                                  f"written to {path}")
    header = {"format": FORMAT, "version": str(VERSION), "dtype": model.dtype,
              "architecture": json.dumps(model.config())}
    if metadata:
        try:
            header["nnx"] = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"safetensors metadata must be JSON-serialisable: {exc}") from None
    from ..checkpoint import atomic_write

    atomic_write(path, save(weights, metadata=header))


def read_safetensors(path) -> tuple[dict, dict]:
    """``(header, weights)`` of an nnx safetensors file: the parsed metadata (``architecture``
    and ``nnx`` as dicts) and host arrays by name. Raises CheckpointError for a missing,
    damaged or foreign file."""
    safetensors = require("safetensors", "reading safetensors files")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no safetensors file at {path}; check the path")
    try:
        with safetensors.safe_open(path, framework="np") as f:
            header = dict(f.metadata() or {})
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # the reader raises its own error types on damaged input
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(exc).__name__}"
                              f": {exc}); it may be truncated or corrupted") from None
    if header.get("format") != FORMAT or "architecture" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not an nnx model (its "
                              "metadata has no nnx architecture); write one with "
                              "nnx.export.to_safetensors")
    if int(header.get("version", "0")) > VERSION:
        raise CheckpointError(f"{path} was written by a newer nnx (format version "
                              f"{header['version']}, this one reads {VERSION}); upgrade nnx")
    try:
        header["architecture"] = json.loads(header["architecture"])
        header["nnx"] = json.loads(header.get("nnx", "{}"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable nnx metadata ({exc})") from None
    return header, weights


def load_safetensors(path, device="cpu", dtype: str | None = None):
    """Rebuild the model written by :func:`to_safetensors` on ``device``.

    ``dtype`` defaults to the saved one. Raises CheckpointError when the file
    is not an nnx model or its tensors do not fit the architecture.
    """
    from ..layers import build

    header, weights = read_safetensors(path)
    try:
        model = build(header["architecture"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: cannot rebuild the saved architecture ({exc}); was it "
                              "saved with a custom layer that is not registered here? Call "
                              "nnx.register_layer(cls) first") from None
    model.init(device, 0, dtype or header.get("dtype", "float32"))
    expected = set(model.get_weights())
    extra = sorted(set(weights) - expected)
    if extra:
        raise CheckpointError(f"{path} has tensors this architecture does not: "
                              f"{', '.join(extra)}")
    try:
        model.set_weights(weights)
    except ConfigError as exc:
        raise CheckpointError(f"{path} does not fit its architecture: {exc}") from None
    return model
