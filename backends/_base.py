"""The Backend object every backend module builds: one array library on one device.

Only this package knows concrete array libraries. Everything in ``nnx`` talks to
them through a ``Backend`` and the Array API namespace ``backend.xp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class BackendUnavailable(RuntimeError):
    """The requested array library or device cannot be used here.

    Raised by :func:`backends.get`; the message says what to install or why the
    device failed. Re-exported as ``nnx.errors.BackendUnavailable``.
    """

    exit_code = 2


@dataclass(eq=False)
class Backend:
    """One array library on one device.

    Attributes
    ----------
    name : library key: ``"numpy"``, ``"cupy"``, ``"torch"`` or ``"strict"``.
    label : canonical device string, e.g. ``"numpy"``, ``"torch:cuda:0"``.
    xp : the Array API namespace (array-api-compat wrapped where needed).
    device : the library's device object, passed as ``device=`` on creation.
    has_float64 : False on devices without double precision (MPS, strict no_float64).
    inplace : True when arrays can be updated in place (``x -= y``).
    fast : the library's ``out=`` functions (:class:`backends.fast.OutKernels`), which
        optimizers use to skip temporaries; None where the library has none.
    flat_params : True when slices and reshapes of a contiguous 1-D array are views
        that write through (NumPy, CuPy, torch): a model then keeps all its parameters
        in one flat buffer and all its gradients in another (:mod:`nnx.layers.flat`).
    """

    name: str
    label: str
    xp: Any
    device: Any
    has_float64: bool = True
    inplace: bool = True
    fast: Any = None
    flat_params: bool = False
    _to_numpy: Callable[[Any], np.ndarray] = field(default=np.asarray, repr=False)
    _sync: Callable[[], None] = field(default=lambda: None, repr=False)
    _device_rng: Callable[[int], Any] | None = field(default=None, repr=False)
    _blas_threads: Callable[[int], Callable[[], None]] | None = field(default=None, repr=False)
    details: str = ""

    def dtype(self, name: str = "float32"):
        """The namespace dtype for ``"float32"``/``"float64"``/``"int64"``/..."""
        if name == "float64" and not self.has_float64:
            raise BackendUnavailable(
                f"device {self.label!r} has no float64; use --dtype float32 "
                "or a device with double precision (cpu, cuda)")
        try:
            return getattr(self.xp, name)
        except AttributeError:
            raise BackendUnavailable(f"dtype {name!r} is not available on {self.label}") from None

    def asarray(self, host, dtype=None):
        """Copy a host array (NumPy or nested lists) to this device, with ``dtype``.

        ``dtype`` is a name (``"float32"``) or a namespace dtype. Data is cast on
        the host first, so exactly one copy crosses to the device, and the result
        never shares memory with ``host``.
        """
        if isinstance(dtype, str):
            np_dtype, dtype = np.dtype(dtype), self.dtype(dtype)
        elif dtype is not None:
            # np.float32 (NumPy, CuPy) is a class; torch and strict dtypes print as "lib.float32"
            np_dtype = np.dtype(getattr(dtype, "__name__", None) or str(dtype).rsplit(".", 1)[-1])
        else:
            np_dtype = None
        host = np.array(host, dtype=np_dtype, copy=True, order="C")
        return self.xp.asarray(host, dtype=dtype, device=self.device, copy=True)

    def to_numpy(self, x) -> np.ndarray:
        """Copy a device array to a host NumPy array (a synchronisation point)."""
        return self._to_numpy(x)

    def rng(self, seed: int | None) -> np.random.Generator:
        """Host generator for weights, shuffles and splits: equal across backends."""
        return np.random.default_rng(seed)

    def device_rng(self, seed: int):
        """Generator for per-step randomness (dropout masks) on the device.

        Returns an object with ``uniform(shape, dtype)``, ``get_state()`` and
        ``set_state(state)``. Streams differ between libraries.
        """
        if self._device_rng is not None:
            return self._device_rng(seed)
        return HostUploadRng(self, seed)

    def limit_blas_threads(self, threads: int) -> Callable[[], None]:
        """Run the library's BLAS on at most ``threads`` threads; returns the function that
        restores the previous count. Nothing changes (the function does nothing) where
        nnx does not steer the BLAS (torch, CuPy, strict), when threadpoolctl is not
        installed, or when the environment chose a count (``OMP_NUM_THREADS``,
        ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``)."""
        if self._blas_threads is None:
            return _nothing
        return self._blas_threads(threads)

    def synchronize(self) -> None:
        """Wait until queued device work has finished (for timing)."""
        self._sync()

    def describe(self) -> str:
        """One line for logs: library, version and device."""
        return f"{self.label} ({self.details})" if self.details else self.label

    def __repr__(self) -> str:
        return f"Backend({self.label!r})"


def _nothing() -> None:
    return None


class HostUploadRng:
    """Per-step randomness drawn on the host and uploaded: used where the
    library has no generator of its own (array-api-strict) and on NumPy,
    where the host *is* the device."""

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        self._gen = np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        host = self._gen.random(shape, dtype=np.float32 if "32" in str(dtype) else np.float64)
        if self._backend.name == "numpy":
            return host  # already on the device; skip the defensive copy
        return self._backend.xp.asarray(host, dtype=dtype, device=self._backend.device)

    def get_state(self) -> dict:
        return self._gen.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._gen.bit_generator.state = state
