"""CuPy on a CUDA GPU."""

from __future__ import annotations

from . import cupy_kernels, fast
from ._base import Backend, BackendUnavailable
from .fast import Namespace, OutKernels

NAME = "cupy"
PACKAGE = "cupy-cuda12x or cupy-cuda13x (pip install 'nnx-trainer[cuda12]')"


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


def namespace(base) -> Namespace:
    """array-api-compat's CuPy namespace with ``matmul`` and ``take`` called directly."""
    import cupy

    return fast.numpy_like(base, cupy, "cupy")


fast.register("array_api_compat.cupy", namespace)


def make(device: str | None = None) -> Backend:
    """Build the CuPy backend on ``cuda`` / ``cuda:N`` (default GPU 0)."""
    if not is_installed():
        raise BackendUnavailable(
            f"--device cuda needs CuPy, which is not installed; install {PACKAGE}, "
            "or use --device cpu")
    index = 0
    if device not in (None, "", "cuda"):
        try:
            index = int(str(device).split(":", 1)[1])
        except (IndexError, ValueError):
            raise BackendUnavailable(f"bad CUDA device {device!r}; use cuda or cuda:N") from None
    try:
        import array_api_compat.cupy as xp
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # driver missing, no GPU, broken install
        raise BackendUnavailable(
            f"CuPy is installed but no CUDA GPU is usable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check the NVIDIA "
            "driver with nvidia-smi, or use --device cpu") from None
    if not 0 <= index < count:
        raise BackendUnavailable(f"cuda:{index} requested but {count} GPU(s) found; "
                                 f"use cuda:0 .. cuda:{count - 1}")
    dev = cupy.cuda.Device(index)
    dev.use()
    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    name = name.decode() if isinstance(name, bytes) else name

    class CupyRng:
        def __init__(self, seed):
            self._gen = cupy.random.default_rng(seed)

        def uniform(self, shape, dtype):
            return self._gen.random(shape, dtype=dtype)

        def get_state(self):
            return {"cupy_bit_generator": repr(self._gen.bit_generator)}

        def set_state(self, state):  # CuPy's generator state cannot be restored
            pass

    return Backend(
        name=NAME, label=f"cuda:{index}", xp=fast.fast_namespace(xp), device=dev,
        _to_numpy=lambda x: cupy.asnumpy(x),
        _sync=lambda: cupy.cuda.get_current_stream().synchronize(),
        _device_rng=CupyRng, flat_params=True,
        fast=OutKernels.of(cupy, "cupy", **cupy_kernels.kernels(cupy)),
        details=f"CuPy {cupy.__version__}, {name}",
    )


# --- for NCCL between GPUs (nnx.distributed.nccl) -----------------------------------

def nccl():
    """CuPy's NCCL module, or BackendUnavailable saying how to get it."""
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        raise BackendUnavailable(
            "NCCL between GPUs goes through CuPy, which is not installed; install "
            "cupy-cuda12x or cupy-cuda13x (pip install 'nnx-trainer[cuda12]'), or train on the "
            "CPU over MPI (--device cpu)")
    try:
        from cupy.cuda import nccl as module

        module.get_unique_id  # noqa: B018  (absent when CuPy was built without NCCL)
        if not getattr(module, "available", True):
            raise ImportError("cupy.cuda.nccl.available is False")
    except Exception as exc:
        raise BackendUnavailable(
            f"NCCL is not available in this CuPy build ({type(exc).__name__}: "
            f"{' '.join(str(exc).split()) or 'no detail'}); install it for CuPy (pip install "
            "nvidia-nccl-cu12, or -cu13 for cupy-cuda13x), or use --distributed mpi, which "
            "moves the gradients through host memory") from None
    return module


def gpu_count() -> int:
    """Number of CUDA GPUs CuPy sees here (0 without CuPy or a driver)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def current_stream(x):
    """The current CUDA stream when ``x`` is a CuPy array, else None."""
    import cupy

    return cupy.cuda.get_current_stream() if isinstance(x, cupy.ndarray) else None

