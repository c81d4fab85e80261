"""NumPy on the CPU (through array-api-compat's wrapped namespace)."""

from __future__ import annotations

import os

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


#: a thread count set here is the user's choice: nnx leaves the BLAS alone
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _blas_threads():
    """``limit(threads) -> restore`` for NumPy's BLAS, through threadpoolctl when installed
    (one controller, made at the first call: about 15 us a limit instead of 1 ms)."""
    kept = []

    def limit(threads: int):
        if any(os.environ.get(v) for v in THREAD_VARIABLES):
            return lambda: None
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return lambda: None
        if not kept:
            kept.append(ThreadpoolController())
        blas = kept[0].select(user_api="blas")
        if all(lib.num_threads <= threads for lib in blas.lib_controllers):
            return lambda: None
        return blas.limit(limits=threads).restore_original_limits

    return limit


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
        details=f"NumPy {np.__version__}, CPU", flat_params=True, _blas_threads=_blas_threads(),
        fast=OutKernels.of(np, "numpy"),
    )
