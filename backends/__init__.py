"""Backend registry: turn a device string into a :class:`Backend`.

Device strings
--------------
``auto``               CuPy on GPU 0 when a GPU is usable, else NumPy (says which)
``cpu`` / ``numpy``    NumPy on the CPU
``cuda`` / ``cuda:N``  CuPy on GPU N          (``cupy`` is ``cuda``)
``torch``              PyTorch on the CPU;  ``torch:cuda[:N]``, ``torch:mps``
``strict``             array-api-strict;    ``strict:device1``, ``strict:no_float64``

Only ``auto`` ever picks for you. Anything else either gives exactly what was
asked for or raises :class:`BackendUnavailable` saying what to install or why.
"""

from __future__ import annotations

import warnings

from . import cupy_backend, numpy_backend, strict_backend, torch_backend
from ._base import Backend, BackendUnavailable
from .fast import array_namespace

__all__ = ["Backend", "BackendUnavailable", "get", "available", "DEVICE_HELP",
           "array_namespace"]

MODULES = {m.NAME: m for m in (numpy_backend, cupy_backend, torch_backend, strict_backend)}

DEVICE_HELP = ("auto, cpu, numpy, cuda, cuda:N, cupy, torch, torch:cuda, torch:cuda:N, "
               "torch:mps, strict, strict:device1, strict:no_float64")

_cache: dict[str, Backend] = {}


def _parse(spec: str) -> tuple[str, str | None]:
    """Split a device string into (library key, library-specific device)."""
    s = spec.strip().lower()
    if s in ("cpu", "numpy", "numpy:cpu"):
        return "numpy", None
    if s in ("cuda", "cupy", "gpu"):
        return "cupy", "cuda"
    if s.startswith(("cuda:", "cupy:")):
        return "cupy", "cuda:" + s.split(":", 1)[1]
    lib, _, dev = s.partition(":")
    if lib in ("torch", "strict"):
        return lib, dev or None
    raise BackendUnavailable(f"unknown device {spec!r}; valid devices are: {DEVICE_HELP}")


def get(device: str | Backend = "auto") -> Backend:
    """Return the backend for a device string (see the module docstring).

    Passing a :class:`Backend` returns it unchanged. Backends are cached, so
    ``get("cpu") is get("numpy")``.
    """
    if isinstance(device, Backend):
        return device
    if not isinstance(device, str) or not device.strip():
        raise BackendUnavailable(f"device must be a string such as 'cpu', got {device!r}; "
                                 f"valid devices are: {DEVICE_HELP}")
    key = device.strip().lower()
    if key == "auto":
        return _auto()
    lib, dev = _parse(key)
    cache_key = f"{lib}:{dev}"
    if cache_key not in _cache:
        _cache[cache_key] = MODULES[lib].make(dev)
    return _cache[cache_key]


def _auto() -> Backend:
    if cupy_backend.is_installed():
        try:
            backend = get("cuda")
        except BackendUnavailable as exc:
            warnings.warn(f"device auto: {exc}; using NumPy on the CPU", stacklevel=3)
        else:
            warnings.warn(f"device auto: using {backend.describe()}", stacklevel=3)
            return backend
    return get("numpy")


def available() -> dict[str, str]:
    """Map every device string that works here to its description.

    Libraries that are not installed are left out; GPUs are probed.
    """
    found = {}
    candidates = ["numpy", "cuda", "torch", "torch:cuda", "torch:mps",
                  *(f"strict:{d}" if d != "cpu" else "strict" for d in strict_backend.DEVICES)]
    for spec in candidates:
        lib, _ = _parse(spec)
        if not MODULES[lib].is_installed():
            continue
        try:
            found[spec] = get(spec).describe()
        except BackendUnavailable:
            continue
    return found
