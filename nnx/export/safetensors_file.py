"""Models as safetensors files: the weights as tensors, the nnx configuration as metadata.

Tensors are named as in ``model.get_weights()`` (``dense_0.w`` of shape
``(n_in, n_out)``, ``dense_0.b``, ``batchnorm_1.running_mean``, ...), in the
model's dtype. The header's string metadata holds ``format`` (``nnx-model``),
``version``, ``dtype``, ``architecture`` (the JSON of ``model.config()``) and,
when given, ``nnx`` (a JSON object of further settings). Any safetensors reader
opens the file (``safetensors.torch.load_file``); :func:`load_safetensors`
rebuilds the nnx model from it (it is read by :mod:`nnx.safetensors_io`, beside
the other model files, so that ``nnx.load`` needs nothing from here). Writes are
atomic, and a model with NaN or infinite weights is refused.
"""

from __future__ import annotations

import json

import numpy as np

from ..atomic import write_bytes
from ..errors import CheckpointError, ConfigError
from ..extras import require
from ..safetensors_io import FORMAT, VERSION, load_safetensors, read_safetensors

__all__ = ["to_safetensors", "load_safetensors", "read_safetensors"]


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
    write_bytes(path, save(weights, metadata=header))
