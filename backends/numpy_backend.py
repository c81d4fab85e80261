"""NumPy on the CPU (through array-api-compat's wrapped namespace)."""

from __future__ import annotations

from . import fast
from ._base import Backend, BackendUnavailable
from .fast import Namespace, OutKernels

NAME = "numpy"
PACKAGE = "numpy"


def is_installed() -> bool:
    return True  # a hard dependency of nnx


def namespace(base) -> Namespace:
    """array-api-compat's NumPy namespace with ``matmul`` and ``take`` called directly."""
    import numpy as np

    return fast.numpy_like(base, np, "numpy")


fast.register("array_api_compat.numpy", namespace)


def make(device: str | None = None) -> Backend:
    """Build the NumPy backend. ``device`` must be None or ``"cpu"``."""
    if device not in (None, "", "cpu"):
        raise BackendUnavailable(f"NumPy runs on the CPU only, not {device!r}; use --device cpu")
    import array_api_compat.numpy as xp
    import numpy as np

    return Backend(
        name=NAME, label="numpy", xp=fast.fast_namespace(xp), device="cpu",
        # a copy, like every other backend: callers may keep it while training goes on
        _to_numpy=lambda x: np.array(x, copy=True),
        details=f"NumPy {np.__version__}, CPU", flat_params=True,
        fast=OutKernels.of(np, "numpy"),
    )
