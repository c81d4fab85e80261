"""Checks of the Python API's plain arguments: whole numbers, seeds and float dtypes.

One rule each, so that ``Trainer``, ``fit``, ``mlp``, the layers and ``load``
accept and refuse the same values with the same words: a whole number may be a
Python ``int`` or a NumPy integer scalar (never a bool, a float such as
``2.5`` or a string); a seed is a whole number from 0 to 2**63 - 1; a dtype
is float32 or float64, given as a name or as a NumPy or torch dtype.
"""

from __future__ import annotations

import numbers

from .errors import ConfigError

__all__ = ["whole_number", "check_seed", "float_dtype", "check_fit_args", "FLOAT_DTYPES"]

FLOAT_DTYPES = ("float32", "float64")


def whole_number(value, what: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` (NumPy integers count) of at least ``minimum``, else a
    ConfigError naming ``what`` (``2.5``, ``"3"`` and ``True`` are refused, never
    truncated or converted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or int(value) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{what} must be {kind}, got {value!r}")
    return int(value)


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int from 0 to 2**63 - 1 (NumPy integers count), else a ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= int(seed) < 2**63:
        raise ConfigError(f"{what} must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return int(seed)


def float_dtype(dtype, what: str = "dtype") -> str:
    """The name (``"float32"`` or ``"float64"``) of ``dtype``: a name, a NumPy dtype or type
    (``np.float32``) or a torch dtype; anything else (int32, float16, ...) is a ConfigError."""
    name = dtype
    if not isinstance(dtype, str):
        name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    name = str(name).removeprefix("torch.")
    if name not in FLOAT_DTYPES:
        raise ConfigError(f"{what} must be 'float32' or 'float64' (nnx trains and stores "
                          f"floats in one of these), got {dtype!r}")
    return name


def check_fit_args(epochs, validation_data, validation_split) -> int:
    """``Trainer.fit``'s ``epochs`` (returned as an int), ``validation_data`` (a pair) and
    ``validation_split`` (a fraction in [0, 1), NumPy floats count); ConfigError otherwise."""
    epochs = whole_number(epochs, "epochs")
    if validation_data is not None and validation_split:
        raise ConfigError("give validation_data or validation_split, not both")
    if (isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real)
            or not 0.0 <= validation_split < 1.0):
        raise ConfigError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                        or len(validation_data) != 2):
        raise ConfigError("validation_data must be a pair (x_val, y_val)")
    return epochs
