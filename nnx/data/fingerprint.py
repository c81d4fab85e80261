"""A fingerprint of a training set, stored in checkpoints so that a resume can tell
whether it continues on the data the run was trained on.

``fingerprint(x, y)`` is a small JSON-able dict: the shapes and dtypes of ``x``
and ``y`` and a CRC-32 of their bytes in C order. It is there to catch a
mistake (another file, another split, the rows in another order), not an
adversary: it reads the data once on the host (60000 x 784 float32 in 0.25 s),
and arrays of a device are copied to the host first. Equal data gives equal
fingerprints; a change of one value, of the order of the rows, of a shape or
of a dtype gives another.
"""

from __future__ import annotations

import zlib

import numpy as np

from .checks import to_host

__all__ = ["fingerprint", "is_fingerprint", "describe", "same_data"]

_KEYS = ("x_shape", "x_dtype", "y_shape", "y_dtype", "digest")


def fingerprint(x, y, backend=None) -> dict:
    """``{"x_shape", "x_dtype", "y_shape", "y_dtype", "digest"}`` of the arrays ``x`` and
    ``y`` (host arrays, lists or arrays of ``backend``)."""
    crc, out = 0, {}
    for name, a in (("x", x), ("y", y)):
        a = np.ascontiguousarray(to_host(a, backend, f"training data {name}"))
        out[f"{name}_shape"] = [int(n) for n in a.shape]
        out[f"{name}_dtype"] = str(a.dtype)
        crc = zlib.crc32(f"{name}{a.shape}{a.dtype.str}".encode(), crc)
        if a.dtype.kind == "O":  # object arrays have no stable bytes: use their text
            crc = zlib.crc32(repr(a.tolist()).encode(), crc)
        else:
            crc = zlib.crc32(memoryview(a.reshape(-1).view(np.uint8)), crc)
    out["digest"] = f"crc32:{crc:08x}"
    return out


def is_fingerprint(value) -> bool:
    """Whether ``value`` has the form :func:`fingerprint` returns (read from a file)."""
    return (isinstance(value, dict) and set(_KEYS) <= set(value)
            and all(isinstance(value[k], list) and all(isinstance(n, int) for n in value[k])
                    for k in ("x_shape", "y_shape"))
            and all(isinstance(value[k], str) for k in ("x_dtype", "y_dtype", "digest")))


def same_data(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in _KEYS)


def describe(fp: dict) -> str:
    """``"1437 examples of (64,) float32, labels (1437,) int64"``."""
    x, y = fp["x_shape"], fp["y_shape"]
    n = x[0] if x else 0
    return (f"{n} examples of {tuple(x[1:])} {fp['x_dtype']}, labels {tuple(y)} "
            f"{fp['y_dtype']}")
