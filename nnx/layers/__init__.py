"""Layers: Dense, activations (uniform or per-unit), Dropout, BatchNorm, Sequential, and
for images ``(batch, height, width, channels)``: Conv2D, MaxPool2D, AvgPool2D,
GlobalAvgPool2D, Flatten."""

from __future__ import annotations

from ..errors import ConfigError, names_hint
from .activation_layer import ActivationLayer, MixedActivation
from .base import Layer
from .batchnorm import BatchNorm
from .conv2d import Conv2D
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .sequential import Observer, Sequential

__all__ = ["Layer", "Dense", "ActivationLayer", "MixedActivation", "Dropout", "BatchNorm",
           "Sequential", "Observer", "LAYER_TYPES", "register_layer", "build",
           "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Flatten"]

#: type name -> class, used to rebuild a model from its saved configuration
LAYER_TYPES: dict[str, type] = {c.__name__: c for c in (
    Dense, ActivationLayer, MixedActivation, Dropout, BatchNorm, Conv2D, MaxPool2D, AvgPool2D,
    GlobalAvgPool2D, Flatten)}


def register_layer(cls: type) -> type:
    """Make a custom layer class loadable by ``nnx.load`` (use as a decorator).

    Its ``config()`` must return the keyword arguments of its constructor;
    ``nnx.load`` then rebuilds the layer by its class name (see :mod:`nnx.layers.base`
    for the whole layer contract).
    """
    LAYER_TYPES[cls.__name__] = cls
    return cls


def build(config: dict) -> Sequential:
    """Rebuild a model (without parameters) from ``Sequential.config()``."""
    try:
        specs = config["layers"]
        layers = []
        for spec in specs:
            kind = spec["type"]
            if kind not in LAYER_TYPES:
                raise ConfigError(names_hint("layer type", kind, LAYER_TYPES)
                                  + "; register custom layers with nnx.register_layer")
            layers.append(LAYER_TYPES[kind](**spec["config"]))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"invalid model configuration: {exc}") from None
    return Sequential(layers, input_shape=config.get("input_shape"))
