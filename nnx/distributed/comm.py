"""The communicator contract, and the one-process communicator.

A communicator connects the ``size`` processes (ranks) of one data-parallel
run. Every collective is called by every rank in the same order. Arrays are
1-D and contiguous; ``allreduce_`` and ``broadcast_`` work in place where the
engine allows it and return the result, which callers must use (a copy may
come back, e.g. from a device array that went through host memory).
"""

from __future__ import annotations

import os
import socket

import numpy as np

__all__ = ["Communicator", "SingleProcess", "Member"]


class Member(dict):
    """What one rank reports about itself: ``rank``, ``host``, ``pid``, ``device``."""

    def describe(self) -> str:
        return f"rank {self['rank']} {self['device']} (pid {self['pid']} on {self['host']})"


class Communicator:
    """Base class of the engines. Subclasses implement the collectives.

    Attributes
    ----------
    rank, size : this process's rank and the number of ranks.
    local_rank, local_size : rank and count among the ranks on this host (GPU choice).
    engine : ``"single"``, ``"mpi"`` or ``"nccl"``.
    timeout : seconds any rank waits inside one collective before the run is
        stopped as stuck (see :class:`~nnx.errors.DistributedError`).
    """

    engine = "single"
    rank, size, local_rank, local_size = 0, 1, 0, 1
    timeout: float = 300.0

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints and writes files."""
        return self.rank == 0

    def describe(self) -> str:
        """The engine in a few words, e.g. ``"MPI (MPICH 5.0.2)"``."""
        return "one process"

    # --- collectives on arrays of a backend (1-D, contiguous) ------------------

    def allreduce_(self, x, backend):
        """Sum ``x`` over the ranks; every rank gets the sum (in place where possible)."""
        return x

    def broadcast_(self, x, backend, root: int = 0):
        """Every rank gets rank ``root``'s ``x`` (in place where possible)."""
        return x

    # --- small host values -----------------------------------------------------

    def allreduce_host(self, values, op: str = "sum") -> np.ndarray:
        """``op`` (``"sum"``, ``"min"`` or ``"max"``) of a host array over the ranks."""
        return np.array(values, copy=True)

    def bcast_object(self, obj, root: int = 0):
        """Rank ``root``'s picklable ``obj`` on every rank."""
        return obj

    def allgather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        return [obj]

    def barrier(self) -> None:
        """Wait until every rank has called it."""

    # --- faults ----------------------------------------------------------------

    def notify_failure(self, exc: BaseException) -> None:
        """Tell the other ranks that this one stopped with ``exc`` (no wait).

        Ranks waiting in, or entering, a collective then raise
        :class:`~nnx.errors.RankFailed` naming this rank instead of waiting.
        """

    def wait_for_root(self) -> bool:
        """After :meth:`notify_failure` on a rank other than 0: wait (at most
        ``timeout``) until rank 0 has heard of the failure; False if it never did."""
        return True

    def close(self) -> None:
        """At the end of a run, on rank 0: a rank that failed after the last collective
        then stops waiting for rank 0 to hear of it."""

    def abort(self, code: int = 1) -> None:
        """End every rank now with exit status ``code``."""
        raise SystemExit(code)

    def members(self, device: str) -> list[Member]:
        """Every rank's :class:`Member` record, in rank order (a collective)."""
        me = Member(rank=self.rank, host=socket.gethostname(), pid=os.getpid(), device=device)
        return [Member(m) for m in self.allgather_object(dict(me))]


class SingleProcess(Communicator):
    """One rank: every collective returns its input. ``distributed="off"`` uses it."""
