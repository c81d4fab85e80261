"""Update an array held in a dict, in place where the library allows it.

Optimizers keep parameters, gradients and their state in dicts. Each helper
here applies one elementwise operation to ``d[key]``:

- when the array is writeable (``array_api_compat.is_writeable_array``: NumPy,
  CuPy, torch, array-api-strict) it is updated in place, so no new
  parameter-sized array is allocated and every other reference sees the change;
- otherwise (JAX, read-only NumPy views) the result is computed out of place
  and stored back with ``d[key] = ...``.

Both paths run the same operations in the same order, so they give identical
values. Nothing here reads an array on the host.
"""

from __future__ import annotations

from array_api_compat import is_writeable_array

from .backends import array_namespace

__all__ = ["writeable", "add_", "sub_", "mul_", "div_", "copy_", "zero_"]


def writeable(x) -> bool:
    """True when ``x`` can be changed in place (``x -= y``, ``x[...] = 0``)."""
    return is_writeable_array(x)


def add_(d: dict, key, other):
    """``d[key] += other``; returns the updated array."""
    x = d[key]
    if is_writeable_array(x):
        x += other
    else:
        d[key] = x = x + other
    return x


def sub_(d: dict, key, other):
    """``d[key] -= other``; returns the updated array."""
    x = d[key]
    if is_writeable_array(x):
        x -= other
    else:
        d[key] = x = x - other
    return x


def mul_(d: dict, key, other):
    """``d[key] *= other``; returns the updated array."""
    x = d[key]
    if is_writeable_array(x):
        x *= other
    else:
        d[key] = x = x * other
    return x


def div_(d: dict, key, other):
    """``d[key] /= other``; returns the updated array."""
    x = d[key]
    if is_writeable_array(x):
        x /= other
    else:
        d[key] = x = x / other
    return x


def copy_(d: dict, key, src):
    """Overwrite the values of ``d[key]`` with ``src`` (same shape); returns ``d[key]``.

    Out of place this stores a fresh copy, never ``src`` itself, so a later
    in-place update of either array cannot change the other.
    """
    x = d[key]
    if is_writeable_array(x):
        x[...] = src
    else:
        d[key] = x = array_namespace(src).asarray(src, copy=True)
    return x


def zero_(d: dict, key):
    """Set ``d[key]`` to zeros, clearing NaN and infinity too (``x *= 0`` would not)."""
    x = d[key]
    if is_writeable_array(x):
        x[...] = 0
    else:
        d[key] = x = array_namespace(x).zeros_like(x)
    return x
