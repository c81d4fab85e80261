"""Weight initialisers, drawn on the host so a seed gives the same weights everywhere.

Each initialiser is ``f(rng, shape, fan_in, fan_out) -> host array`` (float64;
the layer casts and moves it). ``rng`` is a ``numpy.random.Generator``.

=================  ==========================================  ====================
name               distribution                                 for
=================  ==========================================  ====================
zeros, constant    all 0 / all ``value`` (symmetric: bad idea)  biases
normal, uniform    N(0, std^2) / U(-limit, limit)               experiments
xavier_normal      N(0, 2/(fan_in+fan_out))                     tanh, sigmoid
xavier_uniform     U(±sqrt(6/(fan_in+fan_out)))                 tanh, sigmoid
he_normal          N(0, 2/fan_in)                               ReLU family
he_uniform         U(±sqrt(6/fan_in))                           ReLU family
lecun_normal       N(0, 1/fan_in)                               SELU, linear
auto               He for the ReLU family, else Xavier normal
=================  ==========================================  ====================
"""

from __future__ import annotations

import math

from .errors import ConfigError, names_hint

__all__ = ["INITIALIZERS", "get_initializer", "resolve_auto"]


def zeros(rng, shape, fan_in, fan_out, **_):
    return rng.standard_normal(shape) * 0.0


def constant(rng, shape, fan_in, fan_out, value: float = 0.1, **_):
    return rng.standard_normal(shape) * 0.0 + value


def normal(rng, shape, fan_in, fan_out, std: float = 0.01, **_):
    return rng.standard_normal(shape) * std


def uniform(rng, shape, fan_in, fan_out, limit: float = 0.05, **_):
    return rng.uniform(-limit, limit, shape)


def xavier_normal(rng, shape, fan_in, fan_out, **_):
    return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))


def xavier_uniform(rng, shape, fan_in, fan_out, **_):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def he_normal(rng, shape, fan_in, fan_out, **_):
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def he_uniform(rng, shape, fan_in, fan_out, **_):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, shape)


def lecun_normal(rng, shape, fan_in, fan_out, **_):
    return rng.standard_normal(shape) * math.sqrt(1.0 / fan_in)


INITIALIZERS = {f.__name__: f for f in (zeros, constant, normal, uniform, xavier_normal,
                                        xavier_uniform, he_normal, he_uniform, lecun_normal)}
ALIASES = {"glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform",
           "xavier": "xavier_normal", "glorot": "xavier_normal", "he": "he_normal",
           "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform", "kaiming": "he_normal",
           "lecun": "lecun_normal", "zero": "zeros"}
NAMES = (*INITIALIZERS, "auto", *ALIASES)


def resolve_auto(family: str) -> str:
    """``auto``: He for the ReLU family, Xavier for everything else."""
    return "he_normal" if family == "relu" else "xavier_normal"


def get_initializer(name: str, family: str = "other"):
    """Return ``(canonical_name, function)``; ``family`` resolves ``"auto"``.

    ``name`` may carry a parameter: ``"normal:0.1"`` (std), ``"uniform:0.05"``
    (limit), ``"constant:0.5"``.
    """
    if not isinstance(name, str):
        raise ConfigError(f"init must be a name such as 'auto', got {name!r}")
    base, _, param = name.strip().lower().partition(":")
    base = ALIASES.get(base, base)
    if base == "auto":
        base = resolve_auto(family)
    if base not in INITIALIZERS:
        raise ConfigError(names_hint("initialiser", base, NAMES))
    fn = INITIALIZERS[base]
    if param:
        key = {"normal": "std", "uniform": "limit", "constant": "value"}.get(base)
        if key is None:
            raise ConfigError(f"initialiser {base!r} takes no parameter (got {name!r})")
        try:
            value = float(param)
        except ValueError:
            raise ConfigError(f"initialiser parameter in {name!r} must be a number") from None
        return base, (lambda rng, shape, fi, fo: fn(rng, shape, fi, fo, **{key: value}))
    return base, fn
