"""Ranks connected by MPI (mpi4py), collectives on host NumPy buffers.

Every collective is started non-blocking and waited for in a loop that also
watches a second, duplicated communicator for control messages, so that no
rank waits forever:

- a rank that stops with an error calls :meth:`MPICommunicator.notify_failure`,
  which sends its error to every other rank; a rank waiting in (or entering) a
  collective then raises :class:`~nnx.errors.RankFailed` naming that rank;
- a collective that has not completed after ``timeout`` seconds means some rank
  is stuck or stopped (a rank killed outright is cleaned up by ``mpiexec``
  itself). The ranks that timed out tell each other, wait a few seconds for
  the others' notices, and the lowest of them prints one line naming the ranks
  that never arrived and aborts the whole job (``MPI_Abort``), as PyTorch's
  NCCL watchdog takes the process down: a stuck peer cannot be recovered.

The pip ``mpich`` wheel is not CUDA-aware, so device arrays cross host memory
here; between GPUs use the NCCL communicator (:mod:`nnx.distributed.nccl`).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..errors import ConfigError, RankFailed
from .comm import Communicator

__all__ = ["MPICommunicator", "mpi"]

#: control-message tags on the duplicated communicator
_TAG_FAIL, _TAG_STUCK, _TAG_DONE = 71, 72, 73
_OPS = ("sum", "min", "max")


def mpi():
    """The ``mpi4py.MPI`` module, or a MissingExtra error naming the ``mpi`` extra."""
    from ..extras import require

    return require("mpi4py.MPI", "training on more than one process")


def check_timeout(timeout) -> float:
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not ok or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"the distributed timeout must be a positive number of seconds, got "
                          f"{timeout!r}")
    return float(timeout)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class MPICommunicator(Communicator):
    """The ranks of an MPI job (``mpiexec -n K``), or of ``comm`` (an mpi4py communicator).

    ``timeout`` (seconds) bounds the wait inside any one collective.
    """

    engine = "mpi"

    def __init__(self, comm=None, *, timeout: float = 300.0) -> None:
        MPI = self.MPI = mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = check_timeout(timeout)
        self._ctl = self.comm.Dup()  # control messages never mix with the collectives
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self._sent: list = []  # pending control sends (kept alive until they complete)
        self._notified = False
        self._doing = "start"
        #: where training is, for failure messages ("at step 37 (epoch 2)"), set by the trainer
        self.position: str | None = None

    def describe(self) -> str:
        first = self.MPI.Get_library_version().strip().splitlines()[0]
        words = [w for w in first.replace(":", " ").replace(",", " ").split()
                 if w.lower() != "version"]
        return f"MPI ({' '.join(words[:3 if words[:2] == ['Open', 'MPI'] else 2])})"

    # --- waiting with a bound --------------------------------------------------

    def _wait(self, request, what: str) -> None:
        """Wait for ``request``, raising RankFailed or stopping the job when it cannot end."""
        self._wait_until(request.Test, what)

    def _wait_until(self, ready, what: str) -> None:
        """Poll ``ready()`` until it is true, watching for failures and the timeout."""
        self._doing = what
        start = time.monotonic()
        pause = 0.0
        while not ready():
            if self._check_failures(ready):
                return
            waited = time.monotonic() - start
            if waited > self.timeout:
                self._stuck(what)
            if waited > 0.005:  # past the usual wait: stop spinning a shared core
                pause = min(max(pause * 2, 5e-5), 2e-3)
                time.sleep(pause)

    def _check_failures(self, ready=None) -> bool:
        """Raise RankFailed if another rank reported a failure, unless ``ready()`` says the
        collective completed meanwhile (True: the report waits for the next collective,
        so a rank that is about to fail the same way reports its own error)."""
        status = self.MPI.Status()
        if self._ctl.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_FAIL, status=status):
            if ready is not None and ready():
                return True
            info = self._ctl.recv(source=status.Get_source(), tag=_TAG_FAIL)
            raise RankFailed(info["message"], rank=info["rank"], exit_code=info["exit_code"])
        return False

    def _send_all(self, obj, tag: int) -> None:
        for dest in range(self.size):
            if dest != self.rank:
                self._sent.append(self._ctl.isend(obj, dest=dest, tag=tag))
        self._sent = [r for r in self._sent if not r.Test()]

    def _stuck(self, what: str) -> None:
        """A collective timed out: name the ranks that never arrived, then abort the job."""
        self._send_all(self.rank, _TAG_STUCK)
        grace = min(5.0, max(1.0, self.timeout / 10))
        reporters, end = {self.rank}, time.monotonic() + grace
        status = self.MPI.Status()
        while time.monotonic() < end:
            self._check_failures()
            while self._ctl.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_STUCK, status=status):
                reporters.add(self._ctl.recv(source=status.Get_source(), tag=_TAG_STUCK))
            time.sleep(0.01)
        missing = sorted(set(range(self.size)) - reporters)
        self._before_abort()
        if self.rank == min(reporters):
            names = ", ".join(str(r) for r in missing) or "unknown"
            sys.stderr.write(
                f"error: rank {names} of {self.size} did not reach the {what} within "
                f"{self.timeout:g} s (stuck, stopped or dead); stopping all {self.size} ranks. "
                "Look at that rank's output; raise the limit with timeout= if a step can take "
                "that long\n")
            sys.stderr.flush()
            self.abort(2)
        time.sleep(2 * grace)  # the lowest waiting rank aborts the job; this is a fallback
        self.abort(2)

    # --- collectives -----------------------------------------------------------

    def allreduce_(self, x, backend):
        host, direct = _host_buffer(x, backend)
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM),
                   "all-reduce")
        return x if direct else backend.asarray(host, x.dtype)

    def broadcast_(self, x, backend, root: int = 0):
        host, direct = _host_buffer(x, backend)
        self._wait(self.comm.Ibcast(host, root=root), "broadcast")
        return x if direct else backend.asarray(host, x.dtype)

    def allreduce_host(self, values, op: str = "sum") -> np.ndarray:
        if op not in _OPS:
            raise ValueError(f"op must be one of {_OPS}, got {op!r}")
        buf = np.array(values, copy=True)
        mpi_op = {"sum": self.MPI.SUM, "min": self.MPI.MIN, "max": self.MPI.MAX}[op]
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=mpi_op), "all-reduce")
        return buf

    def bcast_object(self, obj, root: int = 0):
        data = np.frombuffer(_dumps(obj), dtype=np.uint8) if self.rank == root else None
        n = self.allreduce_host(np.array([data.size if data is not None else 0], np.int64),
                                "max")[0]
        buf = data.copy() if data is not None else np.empty(int(n), np.uint8)
        self._wait(self.comm.Ibcast(buf, root=root), "broadcast")
        return _loads(buf)

    def allgather_object(self, obj) -> list:
        mine = np.frombuffer(_dumps(obj), dtype=np.uint8)
        sizes = np.zeros(self.size, np.int64)
        sizes[self.rank] = mine.size
        sizes = self.allreduce_host(sizes)
        out = np.zeros(int(sizes.sum()), np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        out[offsets[self.rank]:offsets[self.rank] + mine.size] = mine
        out = self.allreduce_host(out)  # each rank fills its own span: a sum gathers them
        return [_loads(out[o:o + s]) for o, s in zip(offsets, sizes)]

    def barrier(self) -> None:
        self._wait(self.comm.Ibarrier(), "barrier")

    # --- faults ----------------------------------------------------------------

    def notify_failure(self, exc: BaseException) -> None:
        if self._notified or self.size == 1:
            return
        self._notified = True
        if isinstance(exc, RankFailed):
            info = {"rank": exc.rank, "message": str(exc), "exit_code": exc.exit_code}
        else:
            code = getattr(exc, "exit_code", None)
            if not isinstance(code, int):
                code = 130 if isinstance(exc, KeyboardInterrupt) else 1
            what = _one_line(exc)
            if type(exc).__module__.split(".")[0] != "nnx":
                what = f"{type(exc).__name__}: {what}"
            where = f" {self.position}" if self.position else ""
            info = {"rank": self.rank, "exit_code": code,
                    "message": f"rank {self.rank} of {self.size} stopped{where}: {what}"}
        self._send_all(info, _TAG_FAIL)

    def wait_for_root(self) -> bool:
        if self.rank == 0 or self.size == 1:
            return True
        status, end = self.MPI.Status(), time.monotonic() + self.timeout
        while time.monotonic() < end:
            for tag, heard in ((_TAG_FAIL, True), (_TAG_DONE, False)):
                if self._ctl.Iprobe(source=0, tag=tag, status=status):
                    return heard
            time.sleep(0.01)
        return False

    def close(self) -> None:
        if self.rank == 0 and self.size > 1:
            self._send_all(None, _TAG_DONE)

    def _before_abort(self) -> None:
        """Release what the engine holds before the job is aborted (NCCL overrides it)."""

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def _host_buffer(x, backend):
    """``(NumPy array, True)`` sharing ``x``'s memory on NumPy, else ``(host copy, False)``."""
    if isinstance(x, np.ndarray) and x.flags.c_contiguous and x.flags.writeable:
        return x, True
    return np.ascontiguousarray(backend.to_numpy(x)), False


def _dumps(obj) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(buf):
    import pickle

    return pickle.loads(buf.tobytes())
