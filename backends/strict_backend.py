"""array-api-strict: the reference implementation, used as the test gate.

It rejects everything the standard does not allow (mixed devices, host arrays,
int/float mixing, methods outside the standard). Its devices ``CPU_DEVICE``,
``device1`` (non-default) and ``no_float64`` (like Apple MPS) catch host arrays,
mixed devices and accidental float64.
"""

from __future__ import annotations

from ._base import Backend, BackendUnavailable

NAME = "strict"
PACKAGE = "array-api-strict (pip install 'nnx-trainer[dev]')"
DEVICES = ("cpu", "device1", "no_float64")


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("array_api_strict") is not None


def make(device: str | None = None) -> Backend:
    """Build the strict backend on ``cpu`` (default), ``device1`` or ``no_float64``."""
    if not is_installed():
        raise BackendUnavailable(f"--device strict needs {PACKAGE}")
    import array_api_strict as xp
    import numpy as np

    xp.set_array_api_strict_flags(
        api_version="2025.12", data_dependent_shapes=False, boolean_indexing=False)
    spec = device or "cpu"
    if spec not in DEVICES:
        raise BackendUnavailable(f"unknown strict device {spec!r}; use one of {', '.join(DEVICES)}")
    dev = xp.Device("CPU_DEVICE") if spec == "cpu" else xp.Device(spec)

    def to_numpy(x):
        # strict refuses implicit conversion off its CPU device; go through a copy
        return np.asarray(xp.asarray(x, device=xp.Device("CPU_DEVICE"), copy=True))

    label = "strict" if spec == "cpu" else f"strict:{spec}"
    return Backend(
        name=NAME, label=label, xp=xp, device=dev, has_float64=spec != "no_float64",
        _to_numpy=to_numpy, details=f"array-api-strict {xp.__version__}, {spec}",
    )
