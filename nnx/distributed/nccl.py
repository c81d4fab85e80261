"""NCCL between GPUs, through CuPy (``cupy.cuda.nccl``), bootstrapped over MPI.

One GPU per rank (``cuda:<local rank>``). Rank 0 draws NCCL's unique id and MPI
broadcasts it; gradients and parameters then move GPU to GPU without touching
host memory (the pip ``mpich`` is not CUDA-aware). Host values, objects and the
failure messages of :mod:`nnx.distributed.mpi` still go over MPI. Each device
collective is waited for by polling a CUDA event, so the timeout and the
failure notices work as they do on MPI: one host synchronisation per step.
"""

from __future__ import annotations

from ..backends import cupy_backend
from .mpi import MPICommunicator

# CuPy itself stays in backends/: its NCCL module, GPU count and streams come from there
nccl, gpu_count = cupy_backend.nccl, cupy_backend.gpu_count

__all__ = ["NCCLCommunicator", "nccl", "gpu_count"]


class NCCLCommunicator(MPICommunicator):
    """MPI ranks whose device arrays are reduced and broadcast by NCCL."""

    engine = "nccl"

    def __init__(self, comm=None, *, timeout: float = 300.0) -> None:
        super().__init__(comm, timeout=timeout)
        self._module = nccl()
        self._nccl = None  # made on the first device collective, on the rank's GPU

    def describe(self) -> str:
        v = self._module.get_version()
        version = f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else str(v)
        return f"NCCL {version} through CuPy, started over {super().describe()}"

    def _communicator(self, backend):
        if self._nccl is None:
            with backend.device:
                uid = self._module.get_unique_id() if self.rank == 0 else None
                uid = self.bcast_object(uid)
                self.barrier()  # every rank is here: the blocking NCCL set-up cannot hang
                self._nccl = self._module.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl

    def _dtype(self, x):
        name = str(x.dtype)
        codes = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "int64": "NCCL_INT64",
                 "float16": "NCCL_FLOAT16"}
        if name not in codes:
            raise TypeError(f"NCCL collectives here take {', '.join(codes)}, not {name}")
        return getattr(self._module, codes[name])

    def _on_device(self, x, backend, start, what: str):
        stream = cupy_backend.current_stream(x)
        if stream is None:  # torch:cuda and host arrays go over MPI
            return None
        comm = self._communicator(backend)
        start(comm, x, stream.ptr)
        event = stream.record()
        self._wait_until(lambda: event.done, what)
        return x

    def allreduce_(self, x, backend):
        def start(comm, x, stream):
            comm.allReduce(x.data.ptr, x.data.ptr, x.size, self._dtype(x),
                           self._module.NCCL_SUM, stream)

        out = self._on_device(x, backend, start, "all-reduce")
        return super().allreduce_(x, backend) if out is None else out

    def broadcast_(self, x, backend, root: int = 0):
        def start(comm, x, stream):
            comm.broadcast(x.data.ptr, x.data.ptr, x.size, self._dtype(x), root, stream)

        out = self._on_device(x, backend, start, "broadcast")
        return super().broadcast_(x, backend, root) if out is None else out

    def _before_abort(self) -> None:
        if self._nccl is not None:
            try:
                self._nccl.abort()
            except Exception:  # aborting anyway: the job is being taken down
                pass
