"""nnx: neural networks written by hand on the Python Array API.

The same forward, backward and update code runs on NumPy (CPU), CuPy (CUDA),
PyTorch and array-api-strict; pick one with a device string::

    import nnx
    model = nnx.mlp([64, 128, 10]).init("cpu", 0)
"""

from __future__ import annotations

from . import (
    _source_layout,  # noqa: F401  (first: mounts nnx.backends in a checkout)
    _startup,  # Ctrl-C during this import: one line and exit status 130
    activations,
    backends,
    errors,
    initializers,
    layers,
    losses,
    optim,
    schedules,
)
from .activations import Activation, define_activation, get_activation
from .checkpoint import load, load_checkpoint, save, save_checkpoint
from .errors import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    DataError,
    DerivativeMismatch,
    NnxError,
    NonFiniteError,
)
from .gradcheck import check_layer, gradcheck
from .layers import (
    ActivationLayer,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    MaxPool2D,
    MixedActivation,
    Sequential,
    register_layer,
)
from .losses import get_loss
from .models import cnn, mlp
from .optim import SGD, Adam, AdamW, Optimizer, RMSProp, get_optimizer
from .schedules import get_schedule
from .train import History, Trainer
from .train import callbacks as callbacks

#: the initialisers' module under its former name
init = initializers

__version__ = "0.1.0"


def __getattr__(name):
    # host-side subpackages load on first use: ``nnx.data``, ``nnx.doctor``
    if name in ("data", "doctor"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nnx' has no attribute {name!r}")

__all__ = [
    "activations", "backends", "errors", "initializers", "init", "layers", "losses", "optim",
    "schedules",
    "Trainer", "History", "callbacks", "save", "load", "save_checkpoint", "load_checkpoint",
    "data", "doctor",
    "SGD", "Adam", "AdamW", "Optimizer", "RMSProp", "get_optimizer", "get_schedule",
    "Activation", "define_activation", "get_activation",
    "BackendUnavailable", "CheckpointError", "ConfigError", "DataError",
    "DerivativeMismatch", "NnxError", "NonFiniteError",
    "check_layer", "gradcheck",
    "ActivationLayer", "BatchNorm", "Dense", "Dropout", "Layer", "MixedActivation",
    "Sequential", "register_layer", "get_loss", "mlp",
    "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Flatten", "cnn",
]

_startup.imported()  # the import is done: Ctrl-C is the program's again
