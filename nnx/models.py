"""The ``mlp`` builder: the multilayer perceptron most users start from."""

from __future__ import annotations

from .activations import get_activation
from .errors import ConfigError
from .layers import ActivationLayer, BatchNorm, Dense, Dropout, MixedActivation, Sequential


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
    try:
        sizes = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise ConfigError(f"layer sizes must be integers, got {sizes!r}") from None
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
