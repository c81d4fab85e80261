"""More than one process: data-parallel training over MPI, and NCCL between GPUs.

``mpiexec -n K python train.py`` starts K ranks; :func:`connect` joins them::

    comm = nnx.distributed.connect("auto")   # SingleProcess when not under mpiexec
    trainer = nnx.Trainer(model, distributed=comm)   # or distributed="auto"

Engines: ``"mpi"`` (mpi4py, host NumPy buffers: NumPy and torch on the CPU),
``"nccl"`` (CuPy's NCCL between GPUs, bootstrapped over MPI, one GPU per rank),
``"auto"`` (NCCL for CuPy devices, MPI otherwise, one process when the program
was not started by an MPI launcher) and ``"off"``. This package is the only
part of nnx that imports mpi4py or NCCL, and only when a run has several ranks.
"""

from __future__ import annotations

import os

from ..errors import ConfigError, DistributedError
from .comm import Communicator, Member, SingleProcess
from .parallel import DataParallel

__all__ = ["Communicator", "SingleProcess", "Member", "DataParallel", "connect", "launched_size",
           "launched_rank", "device_for_rank", "ENGINES"]

ENGINES = ("auto", "off", "mpi", "nccl")

#: environment variables through which MPI launchers announce the number of ranks
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")

_connected: dict = {}


def launched_size() -> int:
    """How many ranks the MPI launcher started (1 when there is none), without MPI."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def launched_rank() -> int:
    """This process's rank as the MPI launcher announced it (0 when there is none)."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _resolved(device):
    """``device`` with ``auto`` decided (``cuda`` when CuPy has a usable GPU, else ``cpu``)."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        from .. import backends

        return "cuda" if backends.get("auto").name == "cupy" else "cpu"
    return device


def _is_cuda(device) -> bool:
    label = getattr(device, "label", device)
    return isinstance(label, str) and label.strip().lower().split(":")[0] in (
        "cuda", "cupy", "gpu")


def connect(engine="auto", device="cpu", *, timeout: float = 300.0) -> Communicator:
    """The communicator of this process's run (one per process, made on first use).

    ``engine`` is one of :data:`ENGINES` or a :class:`Communicator` (returned as
    is). ``device`` (a device string or Backend) decides ``auto``: NCCL for
    CUDA through CuPy, MPI for everything else. Under a launcher with more than
    one rank and without mpi4py this is a :class:`~nnx.errors.MissingExtra`
    error naming the ``mpi`` extra, never K separate runs.
    """
    if isinstance(engine, Communicator):
        return engine
    if engine not in ENGINES:
        raise ConfigError(f"unknown distributed mode {engine!r}; use one of "
                          f"{', '.join(ENGINES)} (or a Communicator)")
    size = launched_size()
    if engine == "off" or (engine == "auto" and size == 1):
        return SingleProcess()
    device = _resolved(device)
    if engine == "auto":
        engine = "nccl" if _is_cuda(device) else "mpi"
    if engine == "nccl" and not _is_cuda(device):
        raise ConfigError(f"distributed mode nccl needs a CUDA device (--device cuda), not "
                          f"{getattr(device, 'label', device)!r}; use mpi on the CPU")
    if engine in _connected:
        return _connected[engine]
    from .mpi import MPICommunicator

    if engine == "nccl":
        from .nccl import NCCLCommunicator

        comm = NCCLCommunicator(timeout=timeout)
    else:
        comm = MPICommunicator(timeout=timeout)
    _watch_uncaught(comm)
    _share_cores(comm)
    _connected[engine] = comm
    return comm


def _share_cores(comm: Communicator) -> None:
    """Give each rank on a host its share of the cores for BLAS: K ranks each running as
    many BLAS threads as there are cores make every step many times slower. An explicit
    OMP_NUM_THREADS or OPENBLAS_NUM_THREADS is left alone."""
    if comm.local_size == 1 or any(os.environ.get(v) for v in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, (cores or 1) // comm.local_size)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import warnings

        warnings.warn(f"{comm.local_size} ranks share this host's {cores} cores and each may "
                      f"start {cores} BLAS threads; install threadpoolctl (it comes with the mpi "
                      f"extra) or set OMP_NUM_THREADS={share}", stacklevel=3)
        return
    threadpool_limits(share)


def device_for_rank(device, comm: Communicator):
    """The device this rank trains on: ``cuda`` becomes ``cuda:<local rank>``.

    With several ranks on a host each takes its own GPU; a host with fewer GPUs
    than ranks, or one ``cuda:N`` named for several ranks, is a DistributedError.
    """
    if comm.size == 1:
        return device
    device = _resolved(device)
    label = getattr(device, "label", device)
    if not _is_cuda(device):
        return device
    parts = label.strip().lower().split(":")
    if len(parts) > 1 and parts[1] == str(comm.local_rank):
        return device  # already this rank's GPU
    if len(parts) > 1 and comm.local_size > 1:
        raise ConfigError(f"--device {label} names one GPU for {comm.local_size} ranks on this "
                          "host; use --device cuda and each rank takes GPU <local rank>")
    if len(parts) > 1:
        return device
    count = _gpu_count()
    if comm.local_size > count:
        raise DistributedError(f"{comm.local_size} ranks run on this host but it has {count} "
                               f"GPU(s); start at most {count} rank(s) per host (mpiexec -n "
                               f"{count}, or -ppn {count} over several hosts) or use --device cpu")
    return f"cuda:{comm.local_rank}"


def _gpu_count() -> int:
    from .nccl import gpu_count

    return gpu_count()


def _watch_uncaught(comm: Communicator) -> None:
    """An exception that ends this program tells the other ranks first (they stop too)."""
    import sys

    previous = sys.excepthook

    def hook(kind, value, traceback):
        try:
            comm.notify_failure(value)
        finally:
            previous(kind, value, traceback)

    sys.excepthook = hook
