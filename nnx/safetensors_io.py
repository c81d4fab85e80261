"""Reading nnx models from safetensors files, beside :mod:`nnx.checkpoint` (which reads
``.npz``): ``nnx.load("model.safetensors")`` comes here, and so does
:func:`nnx.export.load_safetensors`; :mod:`nnx.export` writes them.

Tensors are named as in ``model.get_weights()``; the header's string metadata
holds ``format`` (``nnx-model``), ``version``, ``dtype``, ``architecture``
(the JSON of ``model.config()``) and optionally ``nnx`` (a JSON object of
further settings). The architecture is checked against the stored tensors
before the model is allocated (:mod:`nnx.model_file`).
"""

from __future__ import annotations

import json
import os

from .arguments import float_dtype
from .errors import CheckpointError, ConfigError
from .extras import require
from .model_file import check_declared, check_stored_values, declared_model

__all__ = ["FORMAT", "VERSION", "read_safetensors", "load_safetensors"]

FORMAT = "nnx-model"
VERSION = 1


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
    version = header.get("version", "0")
    if not (isinstance(version, str) and version.isdigit()):
        raise CheckpointError(f"{path} is damaged: its format version is {version!r}")
    if int(version) > VERSION:
        raise CheckpointError(f"{path} was written by a newer nnx (format version "
                              f"{header['version']}, this one reads {VERSION}); upgrade nnx")
    try:
        header["architecture"] = json.loads(header["architecture"])
        header["nnx"] = json.loads(header.get("nnx", "{}"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable nnx metadata ({exc})") from None
    return header, weights


def load_safetensors(path, device="cpu", dtype: str | None = None, *,
                     allow_nonfinite: bool = False):
    """Rebuild the model written by :func:`nnx.export.to_safetensors` on ``device``.

    ``dtype`` (float32 or float64) defaults to the saved one. Raises CheckpointError
    when the file is not an nnx model, its tensors do not fit the architecture (checked
    before anything is allocated) or, unless ``allow_nonfinite``, hold NaN or infinity.
    """
    dtype = None if dtype is None else float_dtype(dtype)
    header, weights = read_safetensors(path)
    model = declared_model(header["architecture"], path)
    check_declared(model, weights, path, noun="tensors")
    check_stored_values(weights, path, allow_nonfinite)
    saved = header.get("dtype", "float32")
    if saved not in ("float32", "float64"):
        raise CheckpointError(f"{path} is damaged: its dtype is {saved!r}")
    model.init(device, 0, dtype or saved)
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
