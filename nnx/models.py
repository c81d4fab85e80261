"""Model builders: ``mlp`` (the multilayer perceptron most users start from), ``cnn`` (the
classic small convolutional network) and ``from_spec`` (any stack from a short string)."""

from __future__ import annotations

import math
import numbers

from .activations import get_activation
from .arguments import whole_number
from .errors import ConfigError
from .layers import (
    ActivationLayer,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    MixedActivation,
    Sequential,
)


def _hidden_activation(spec, n):
    """One activation layer for ``n`` units; ``"mixed:relu,tanh"`` cycles per unit."""
    if isinstance(spec, str) and spec.lower().startswith("mixed:"):
        names = [s for s in spec.split(":", 1)[1].split(",") if s]
        if not names:
            raise ConfigError("mixed activation needs names, e.g. mixed:relu,tanh,sin")
        acts = [get_activation(nm) for nm in names]
        layer = MixedActivation([acts[i % len(acts)] for i in range(n)])
        fams = {a.family for a in acts}
        return layer, ("relu" if fams == {"relu"} else "other")
    act = get_activation(spec)
    return ActivationLayer(act), act.family


def _layer_sizes(sizes) -> list[int]:
    """``sizes`` as ints: NumPy integers count; 2.5 or "64" is refused, never truncated."""
    given = sizes
    sizes = list(sizes) if hasattr(sizes, "__iter__") and not isinstance(sizes, str) else None
    if sizes is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                for s in sizes):
        raise ConfigError(f"layer sizes must be integers, got {given!r}")
    return [int(s) for s in sizes]


def mlp(sizes, activation="relu", output=None, init: str = "auto", dropout: float = 0.0,
        batchnorm: bool = False) -> Sequential:
    """Build ``Dense -> [BatchNorm] -> activation -> [Dropout]`` blocks and an output Dense.

    Parameters
    ----------
    sizes : ``[n_in, hidden_1, ..., n_out]``, at least two positive integers.
    activation : hidden activation name or :class:`~nnx.activations.Activation`, a
        list with one per hidden layer, or ``"mixed:relu,tanh"`` to cycle activations
        over the units of each hidden layer.
    output : activation after the last layer; ``None`` (the default) leaves logits,
        which is what the fused cross-entropy losses expect.
    init : initialiser name; ``"auto"`` is He for the ReLU family, Xavier otherwise.
    dropout : dropout rate after each hidden activation (0 disables).
    batchnorm : insert BatchNorm between each hidden Dense and its activation.
    """
    sizes = _layer_sizes(sizes)
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise ConfigError(f"layer sizes must be at least two positive integers, got {sizes}")
    hidden = sizes[1:-1]
    acts = list(activation) if isinstance(activation, (list, tuple)) else [activation] * len(
        hidden)
    if len(acts) != len(hidden):
        raise ConfigError(f"got {len(acts)} activations for {len(hidden)} hidden layers")
    layers = []
    for (n_in, n_out), act in zip(zip(sizes[:-2], hidden), acts):
        act_layer, family = _hidden_activation(act, n_out)
        layers.append(Dense(n_in, n_out, init=init, family=family, bias=not batchnorm))
        if batchnorm:
            layers.append(BatchNorm(n_out))
        layers.append(act_layer)
        if dropout:
            layers.append(Dropout(dropout))
    out_act = get_activation(output) if output is not None else None
    layers.append(Dense(sizes[-2], sizes[-1], init=init,
                        family=out_act.family if out_act else "linear"))
    if out_act is not None:
        layers.append(ActivationLayer(out_act))
    return Sequential(layers)


def cnn(input_shape, n_out: int, *, filters=(32, 64), kernel_size: int = 3, pool: int = 2,
        dense: int = 128, dropout: float = 0.25, batchnorm: bool = False,
        init: str = "auto") -> Sequential:
    """The classic small CNN for images ``(batch, height, width, channels)``.

    For each entry of ``filters``: ``Conv2D(f, kernel_size, padding="same")``,
    [BatchNorm over channels], ReLU, ``MaxPool2D(pool)``; then Flatten, Dense
    ``dense`` + ReLU, Dropout ``dropout`` and an output Dense of ``n_out`` logits.
    The defaults are conv 32 3x3, max-pool 2, conv 64 3x3, max-pool 2, dense 128,
    dropout 0.25.

    Parameters
    ----------
    input_shape : ``(height, width, channels)`` of one image, e.g. ``(28, 28, 1)``.
    n_out : outputs (classes).
    """
    try:
        filters = [int(f) for f in filters]
    except (TypeError, ValueError):
        raise ConfigError(f"filters must be a list of integers, got {filters!r}") from None
    layers = []
    for f in filters:
        layers.append(Conv2D(f, kernel_size, padding="same", init=init, bias=not batchnorm))
        if batchnorm:
            layers.append(BatchNorm(f))
        layers += [ActivationLayer("relu"), MaxPool2D(pool)]
    layers.append(Flatten())
    return _with_head(layers, input_shape, n_out, dense=[dense] if dense else [],
                      dropout=dropout, init=init)


def _with_head(layers, input_shape, n_out, dense=(), dropout=0.0, init="auto") -> Sequential:
    """``layers`` + Dense blocks of sizes ``dense`` (ReLU, Dropout) + output Dense ``n_out``,
    with every size after the images computed from ``input_shape``."""
    n_out = whole_number(n_out, "the number of outputs")
    layers = list(layers)
    width = _features(layers, input_shape)
    for n in dense:
        layers += [Dense(width, n, init=init), ActivationLayer("relu")]
        if dropout:
            layers.append(Dropout(dropout))
        width = n
    layers.append(Dense(width, n_out, init=init, family="linear"))
    return Sequential(layers, input_shape=input_shape)


def _features(layers, input_shape) -> int:
    """The width of the rows that ``layers`` give for inputs ``input_shape``."""
    from .layers.images import infer_shapes

    shapes = infer_shapes(Sequential(layers).layers, input_shape) if layers else [
        tuple(input_shape)]
    last = shapes[-1]
    if len(last) != 1:
        raise ConfigError(f"the layers end with images of shape {last}; add flatten or "
                          "globalavgpool before the dense layers")
    return last[0]


#: the ``--layers`` grammar, shown by ``--help`` and in errors
SPEC_HELP = (
    "comma-separated layers, first to last; the output dense layer is added: "
    "conv:F:K[:S[:PAD]] (F filters, KxK kernel, stride S, PAD same|valid|zeros; "
    "default stride 1, same), maxpool:K[:S], avgpool:K[:S], gap (global average pool), "
    "flatten, dense:N, dropout:P, batchnorm, or an activation name (relu, tanh, "
    "leaky_relu:0.2, ...). Example: conv:32:3,relu,maxpool:2,flatten,dense:128,relu")


def _spec_ints(token: str, args: list[str], least: int, most: int) -> list[int]:
    if not least <= len(args) <= most:
        raise ConfigError(f"layer {token!r} in --layers takes {least} to {most} numbers; "
                          f"{SPEC_HELP}")
    try:
        return [int(a) for a in args]
    except ValueError:
        raise ConfigError(f"layer {token!r} in --layers needs whole numbers; "
                          f"{SPEC_HELP}") from None


def _spec_conv(token: str, args: list[str]):
    pad = "same"
    if len(args) == 4:
        pad = args.pop()
        if pad not in ("same", "valid"):
            pad = _spec_ints(token, [pad], 1, 1)[0]
    f, k, *stride = _spec_ints(token, args, 2, 3)
    return Conv2D(f, k, stride[0] if stride else 1, padding=pad)


def _spec_layer(token: str, shape: tuple):
    """One layer of a ``--layers`` string, for inputs of per-example ``shape``."""
    kind, *args = token.strip().lower().split(":")
    if kind == "conv":
        return _spec_conv(token, args)
    if kind in ("maxpool", "avgpool"):
        size, *stride = _spec_ints(token, args, 1, 2)
        return (MaxPool2D if kind == "maxpool" else AvgPool2D)(size, *stride)
    if kind == "dense":
        (n,) = _spec_ints(token, args, 1, 1)
        if len(shape) != 1:
            raise ConfigError(f"{token!r} in --layers follows images of shape {shape}; put "
                              "flatten (or gap) before it")
        return Dense(shape[0], n)
    if kind == "dropout":
        try:
            (rate,) = [float(a) for a in args]
        except ValueError:
            raise ConfigError(f"{token!r} in --layers needs one rate: dropout:0.25") from None
        return Dropout(rate)
    if args and kind in ("gap", "flatten", "batchnorm"):
        raise ConfigError(f"layer {token!r} in --layers takes no numbers; {SPEC_HELP}")
    if kind == "gap":
        return GlobalAvgPool2D()
    if kind == "flatten":
        return Flatten()
    if kind == "batchnorm":
        return BatchNorm(shape[-1])
    try:
        return ActivationLayer(get_activation(token.strip()))
    except ConfigError:
        raise ConfigError(f"unknown layer {token!r} in --layers; {SPEC_HELP}") from None


def from_spec(spec: str, input_shape, n_out: int, init: str = "auto") -> Sequential:
    """Build the stack a ``--layers`` string describes (see :data:`SPEC_HELP`), for
    examples of shape ``input_shape`` (``(height, width, channels)`` or ``(features,)``),
    ending in an output Dense of ``n_out`` logits."""
    from .layers.images import infer_shapes

    tokens = [t for t in str(spec).split(",") if t.strip()]
    if not tokens:
        raise ConfigError(f"--layers is empty; {SPEC_HELP}")
    layers, shape = [], tuple(input_shape)
    for token in tokens:
        layer = _spec_layer(token, shape)
        layer.name = f"{type(layer).__name__.lower()}_{len(layers)}"
        if isinstance(layer, (Conv2D, Dense)):
            layer.init_name = init
        shape = infer_shapes([layer], shape)[0]
        layers.append(layer)
    if len(shape) != 1:
        raise ConfigError(f"--layers ends with images of shape {shape}; end it with flatten "
                          "(or gap) so the output layer gets rows")
    return _with_head(layers, input_shape, n_out, init=init)


def step_bytes(model: Sequential, batch: int, itemsize: int = 4) -> tuple[int, int, str]:
    """About how many bytes one training step of ``model`` takes on ``batch`` examples.

    ``model`` has an ``input_shape``. Counted: the parameters four times (weights,
    gradients, two optimizer moments) and, per example, every layer's output and its
    gradient, each convolution's im2col columns (kept for the backward pass, and their
    gradient while it runs) and padded input. Returns ``(total, largest buffer, the layer
    that holds it)``: the columns of a convolution are usually the peak of a step.
    """
    from .layers.images import infer_shapes, padding_for

    shapes = infer_shapes(model.layers, model.input_shape)
    ins = [tuple(model.input_shape), *shapes[:-1]]
    params, per_example, big = 0, 0, (0, model.layers[0].name)
    for layer, shape_in, shape_out in zip(model.layers, ins, shapes):
        out = math.prod(shape_out)
        per_example += 2 * out
        if isinstance(layer, Conv2D):
            k, (h, w, c) = layer.kernel_size, shape_in
            cols = shape_out[0] * shape_out[1] * k * k * c
            pads = [sum(padding_for(layer.padding, n, k, layer.stride)) for n in (h, w)]
            per_example += 2 * cols + (h + pads[0]) * (w + pads[1]) * c
            params += k * k * c * layer.filters + layer.filters
            big = max(big, (cols * batch * itemsize, layer.name))
        elif isinstance(layer, Dense):
            params += (layer.n_in + 1) * layer.n_out
        elif isinstance(layer, BatchNorm):
            params += 2 * layer.n_in
    return (4 * params + batch * per_example) * itemsize, big[0], big[1]
