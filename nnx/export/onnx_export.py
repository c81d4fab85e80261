"""Export a trained :class:`~nnx.layers.Sequential` to ONNX for inference.

The graph takes ``input`` of shape ``(batch, n_in)`` with a dynamic batch
dimension and returns ``output`` ``(batch, n_out)``, in the model's dtype
(float32 or float64). Layers map to ONNX operators:

- Dense -> ``Gemm`` (``w`` is ``(n_in, n_out)``, so no transpose);
- BatchNorm -> ``BatchNormalization`` with the running mean and variance;
- Dropout -> nothing (inference is the identity);
- relu, sigmoid, tanh, softplus, abs, sin, leaky_relu, elu -> the operator of
  that name; gelu (nnx's tanh approximation) -> ``Gelu(approximate="tanh")``
  from opset 20, composed from Tanh, Mul and Add below it; silu -> ``x * Sigmoid(x)``;
- MixedActivation -> each activation on the whole row, picked per unit by ``Where``.

``head`` appends ``Softmax`` (over the classes) or ``Sigmoid`` to the logits, so
the file returns probabilities. A layer or activation with no mapping (a user's
own) is a ConfigError naming it. Layers register their own mapping with
:func:`register_onnx`.

    from nnx.export import to_onnx
    to_onnx(model, "model.onnx", head="softmax")
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import ConfigError, names_hint
from ..extras import require

__all__ = ["to_onnx", "register_onnx", "OPSET", "HEADS", "ONNX_LAYERS"]

#: default opset: the first with Gelu; onnxruntime 1.17 and later run it
OPSET = 20
#: the oldest opset written (Softmax over one axis, Gemm with an optional bias)
MIN_OPSET = 13
#: layers that take images (batch, height, width, channels)
_IMAGE_LAYERS = {"Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Flatten"}
#: output heads the export can append to the logits
HEADS = (None, "softmax", "sigmoid")

#: nnx activation name -> ONNX operator with the same maths and no attributes
_SAME_OP = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
            "abs": "Abs", "sin": "Sin"}
_GELU_C = math.sqrt(2.0 / math.pi)


class Graph:
    """Nodes and initialisers of the graph being built; every name is unique.

    ``dtype`` is the NumPy float dtype of the model: constants are cast to it.
    ``layout`` is that of the tensor being built: ``"rows"`` ``(batch, n)``, or
    images ``"nhwc"`` (nnx's, and the graph input's) or ``"nchw"`` (what ONNX's
    Conv and pooling take); :meth:`nchw` and :meth:`channels_last` transpose
    only when the layout changes, so a run of image layers costs two Transposes.
    """

    def __init__(self, onnx, dtype, opset: int, layout: str = "rows") -> None:
        self.onnx, self.helper = onnx, onnx.helper
        self.dtype, self.opset = np.dtype(dtype), opset
        self.layout = layout
        #: per-example input shape of the layer being emitted, nnx's layout (None: unknown)
        self.shape: tuple | None = None
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def nchw(self, x: str) -> str:
        """``x`` as ``(batch, channels, height, width)``."""
        if self.layout == "nhwc":
            x = self.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
            self.layout = "nchw"
        return x

    def channels_last(self, x: str) -> str:
        """``x`` with features or channels on the last axis (rows or NHWC)."""
        if self.layout == "nchw":
            x = self.op("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])
            self.layout = "nhwc"
        return x

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, base: str, array, dtype=None) -> str:
        """An initialiser holding ``array`` (cast to the model's dtype unless ``dtype``)."""
        name = self.fresh(base)
        host = np.ascontiguousarray(np.asarray(array, dtype=dtype or self.dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(host, name))
        return name

    def op(self, op_type: str, inputs, base: str, **attrs) -> str:
        """Append one node; returns the name of its single output."""
        out = self.fresh(base)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out,
                                                **attrs))
        return out


# --- activations --------------------------------------------------------------

def _gelu(g: Graph, x: str, base: str) -> str:
    if g.opset >= 20:
        return g.op("Gelu", [x], base, approximate="tanh")
    # 0.5 * x * (1 + tanh(c * (x + 0.044715 x^3))), as nnx computes it
    x3 = g.op("Mul", [g.op("Mul", [x, x], base), x], base)
    inner = g.op("Add", [x, g.op("Mul", [x3, g.const("k", 0.044715)], base)], base)
    t = g.op("Tanh", [g.op("Mul", [inner, g.const("c", _GELU_C)], base)], base)
    half_x = g.op("Mul", [x, g.const("half", 0.5)], base)
    return g.op("Mul", [half_x, g.op("Add", [t, g.const("one", 1.0)], base)], base)


def _without_double_kernel(g: Graph, name: str, alpha, x: str) -> str:
    """leaky_relu, elu and softplus from operators onnxruntime also runs in float64
    (it has float32 kernels only for LeakyRelu, Elu and Softplus), as nnx computes them."""
    if name == "softplus":  # max(x, 0) + log(1 + exp(-|x|))
        tail = g.op("Exp", [g.op("Neg", [g.op("Abs", [x], name)], name)], name)
        log1p = g.op("Log", [g.op("Add", [tail, g.const("one", 1.0)], name)], name)
        return g.op("Add", [g.op("Relu", [x], name), log1p], name)
    zero = g.const("zero", 0.0)
    positive = g.op("Greater", [x, zero], name)
    if name == "leaky_relu":
        negative = g.op("Mul", [x, g.const("alpha", alpha)], name)
    else:  # elu: alpha * (exp(min(x, 0)) - 1)
        e = g.op("Exp", [g.op("Min", [x, zero], name)], name)
        negative = g.op("Mul", [g.op("Sub", [e, g.const("one", 1.0)], name),
                                g.const("alpha", alpha)], name)
    return g.op("Where", [positive, x, negative], name)


def activation(g: Graph, act, x: str, where: str) -> str:
    """The ONNX nodes of nnx activation ``act`` applied to ``x``; returns the output name."""
    # a user's activation may reuse a built-in name: only nnx's own functions map
    if getattr(act.forward, "__module__", None) != "nnx.activations":
        raise ConfigError(f"{where}: activation {act.name!r} is not one of nnx's built-in "
                          "activations, so it has no ONNX operator; export a model that "
                          f"uses one of: {', '.join(sorted([*_SAME_OP, 'leaky_relu', 'elu']))}"
                          ", gelu, silu, identity")
    name = act.name
    if name == "identity":
        return x
    if g.dtype == np.float64 and name in ("leaky_relu", "elu", "softplus"):
        return _without_double_kernel(g, name, act.param, x)
    if name in _SAME_OP:
        return g.op(_SAME_OP[name], [x], name)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], name, alpha=float(act.param))
    if name == "elu":
        return g.op("Elu", [x], name, alpha=float(act.param))
    if name == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x], name)], name)
    if name == "gelu":
        return _gelu(g, x, name)
    raise ConfigError(f"{where}: activation {name!r} has no ONNX mapping in nnx")


# --- layers -------------------------------------------------------------------

def _dense(g: Graph, layer, weights: dict, x: str) -> str:
    inputs = [g.channels_last(x), g.const(f"{layer.name}.w", weights["w"])]
    if layer.bias:
        inputs.append(g.const(f"{layer.name}.b", weights["b"]))
    return g.op("Gemm", inputs, layer.name)


def _batchnorm(g: Graph, layer, weights: dict, x: str) -> str:
    # ONNX normalises axis 1: the features of rows, the channels of NCHW images
    inputs = [g.nchw(x)] + [g.const(f"{layer.name}.{k}", weights[k])
                    for k in ("gamma", "beta", "running_mean", "running_var")]
    return g.op("BatchNormalization", inputs, layer.name, epsilon=float(layer.eps))


def _activation_layer(g: Graph, layer, weights: dict, x: str) -> str:
    return activation(g, layer.activation, x, f"layer {layer.name!r}")


def _mixed_activation(g: Graph, layer, weights: dict, x: str) -> str:
    from ..activations import get_activation

    x = g.channels_last(x)  # the masks pick units on the last axis
    y = None
    for spec, units in layer.groups.items():
        a = activation(g, get_activation(spec), x, f"layer {layer.name!r}")
        if y is None:  # the first group fills every unit; the others overwrite theirs
            y = a
            continue
        mask = np.zeros(layer.n_in, dtype=bool)
        mask[units] = True
        y = g.op("Where", [g.const(f"{layer.name}.mask", mask, dtype=bool), a, y], layer.name)
    return y


def _dropout(g: Graph, layer, weights: dict, x: str) -> str:
    return x  # inference: the identity


#: layer class name -> ``emit(graph, layer, host_weights, input_name) -> output_name``
ONNX_LAYERS = {"Dense": _dense, "BatchNorm": _batchnorm, "ActivationLayer": _activation_layer,
               "MixedActivation": _mixed_activation, "Dropout": _dropout}


def register_onnx(layer_type: str, emit) -> None:
    """Teach :func:`to_onnx` a layer: ``emit(graph, layer, weights, x) -> output name``.

    ``weights`` holds the layer's parameters and buffers as host arrays by key
    (``"w"``, ``"b"``); ``graph`` is a :class:`Graph` (``op``, ``const``).
    """
    ONNX_LAYERS[layer_type] = emit



# --- the model ----------------------------------------------------------------

def _check_args(model, head, opset, onnx) -> None:
    if getattr(model, "backend", None) is None:
        raise ConfigError("the model has no parameters yet; train or load it before export")
    if head not in HEADS:
        raise ConfigError(names_hint("head", str(head), [str(h) for h in HEADS]))
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
            MIN_OPSET <= opset <= newest):
        raise ConfigError(f"opset must be an integer from {MIN_OPSET} to {newest} (the newest "
                          f"this onnx package knows), got {opset!r}")
    last = model.layers[-1]
    name = getattr(getattr(last, "activation", None), "name", None)
    if head is not None and name in ("sigmoid", "softmax"):
        raise ConfigError(f"the model already ends with a {name} layer ({last.name}); adding "
                          f"head={head!r} would apply an output activation twice: export "
                          "with head=None")


def _layer_weights(model) -> dict:
    """``{layer name: {key: host array}}`` for parameters and buffers."""
    flat = model.get_weights()
    out: dict = {la.name: {} for la in model.layers}
    for key, value in flat.items():
        layer, _, k = key.partition(".")
        out[layer][k] = value
    return out


def _input_shape(model) -> tuple:
    """The shape of one example: the model's ``input_shape`` (images) or ``(n_in,)``."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    if model.n_in is not None:
        return (model.n_in,)
    images = [la.name for la in model.layers if type(la).__name__ in _IMAGE_LAYERS]
    if images:
        raise ConfigError(f"layer {images[0]!r} takes images but the model does not say their "
                          "shape; build it with Sequential(layers, input_shape=(height, width, "
                          "channels))")
    return ("features",)  # elementwise layers only: any number of features


def _emit_layers(g: Graph, model, x: str, shape: tuple) -> tuple[str, tuple]:
    """Every layer's nodes; returns the output name and the per-example output shape."""
    weights = _layer_weights(model)
    shapes = [shape]
    if len(shape) == 3:  # per-example shapes through the stack, as the model checked them
        from ..layers.images import infer_shapes

        shapes += infer_shapes(model.layers, shape)
    for i, layer in enumerate(model.layers):
        kind = type(layer).__name__
        if kind not in ONNX_LAYERS:
            raise ConfigError(f"layer {layer.name!r} ({kind}) has no ONNX mapping; layers that "
                              f"export are: {', '.join(sorted(ONNX_LAYERS))}. Register one "
                              "with nnx.export.register_onnx")
        g.shape = shapes[i] if i < len(shapes) else None
        x = ONNX_LAYERS[kind](g, layer, weights[layer.name], x)
    out_shape = shapes[-1] if len(shape) == 3 else (model.n_out or shape[0],)
    return g.channels_last(x), out_shape


def to_onnx(model, path=None, *, head: str | None = None, opset: int = OPSET):
    """Build (and with ``path``, write atomically) the ONNX model of ``model``.

    Parameters
    ----------
    model : an initialised Sequential (trained or loaded).
    path : where to write the ``.onnx`` file; None only returns the ModelProto.
    head : None (outputs are the logits, as ``model.forward`` gives), ``"softmax"``
        (probabilities over the classes) or ``"sigmoid"`` (per output).
    opset : ONNX opset version (``MIN_OPSET`` to the newest the onnx package knows).

    The input is ``(batch, n_in)``, or images ``(batch, height, width, channels)``
    for a model built with ``input_shape``, as nnx takes them; the batch
    dimension is dynamic.

    Returns the ``onnx.ModelProto``, checked with ``onnx.checker.check_model``.
    """
    onnx = require("onnx", "ONNX export")
    _check_args(model, head, opset, onnx)
    helper = onnx.helper
    shape = _input_shape(model)
    g = Graph(onnx, model.dtype, opset, "nhwc" if len(shape) == 3 else "rows")
    out, out_shape = _emit_layers(g, model, "input", shape)
    if head == "softmax":
        out = g.op("Softmax", [out], "softmax", axis=-1)
    elif head == "sigmoid":
        out = g.op("Sigmoid", [out], "sigmoid")
    if g.nodes and g.nodes[-1].output[0] == out:
        g.nodes[-1].output[0] = "output"
    else:  # nothing computed (dropout and identity only): the output is the input
        g.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(model.dtype))
    graph = helper.make_graph(
        g.nodes, "nnx", [helper.make_tensor_value_info("input", elem, ["batch", *shape])],
        [helper.make_tensor_value_info("output", elem, ["batch", *out_shape])],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    from .. import __version__

    proto = helper.make_model(graph, opset_imports=opsets, producer_name="nnx",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(proto, {"nnx.architecture": json.dumps(model.config()),
                                   "nnx.head": str(head)})
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        from ..atomic import write_bytes

        write_bytes(path, proto.SerializeToString())
    return proto
