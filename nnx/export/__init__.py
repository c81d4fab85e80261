"""Trained models in other formats: ONNX for inference runtimes, safetensors for weights.

Host side: reads the model's weights once (``model.get_weights()``) and writes
files atomically. Each format needs its optional extra (``pip install
'nnx-trainer[onnx]'``, ``'nnx-trainer[safetensors]'``), imported on first use.

    from nnx.export import to_onnx, to_safetensors, load_safetensors
    to_onnx(model, "model.onnx", head="softmax")
    to_safetensors(model, "model.safetensors")
    model = load_safetensors("model.safetensors", device="cpu")
"""

from __future__ import annotations

from . import onnx_images  # noqa: F401  (registers the image layers' mappings)
from .onnx_export import HEADS, ONNX_LAYERS, OPSET, register_onnx, to_onnx
from .safetensors_file import load_safetensors, read_safetensors, to_safetensors

__all__ = ["to_onnx", "register_onnx", "OPSET", "HEADS", "ONNX_LAYERS", "to_safetensors",
           "load_safetensors", "read_safetensors"]
