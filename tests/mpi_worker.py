"""Programs that tests/test_distributed.py starts under ``mpiexec -n K``.

``python tests/mpi_worker.py SCENARIO OUT [ARGS...]``: each scenario runs on
every rank; rank 0 writes its result as JSON (or ``.npz`` of parameters) to
OUT. Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nnx import backends  # noqa: E402
from nnx.distributed import connect  # noqa: E402
from nnx.errors import RankFailed  # noqa: E402


def collectives(out):
    """Every collective of the MPI communicator, on NumPy and torch arrays."""
    comm = connect("auto", "cpu", timeout=20)
    numpy = backends.get("numpy")
    x = np.full(5, comm.rank + 1.0, np.float32)
    same = comm.allreduce_(x, numpy) is x
    b = np.arange(4.0) if comm.rank == 0 else np.zeros(4)
    comm.broadcast_(b, numpy)
    result = {"size": comm.size, "rank_sum": x.tolist(), "in_place": same,
              "broadcast": b.tolist(), "describe": comm.describe(),
              "min": comm.allreduce_host([comm.rank + 3], "min").tolist(),
              "max": comm.allreduce_host([comm.rank + 3], "max").tolist(),
              "object": comm.bcast_object({"from": comm.rank}),
              "gathered": comm.allgather_object(("rank", comm.rank)),
              "members": comm.members("numpy")}
    try:
        torch = backends.get("torch")
    except backends.BackendUnavailable:
        torch = None
    if torch is not None:
        t = torch.asarray(np.arange(3.0) * (comm.rank + 1), "float32")
        result["torch_sum"] = torch.to_numpy(comm.allreduce_(t, torch)).tolist()
    comm.barrier()
    _write(comm, out, result)


def fault(out, mode, timeout="3"):
    """Rank 1 raises, stops itself (SIGSTOP) or is killed (SIGKILL) between collectives."""
    comm = connect("auto", "cpu", timeout=float(timeout))
    numpy = backends.get("numpy")
    x = np.ones(8)
    comm.allreduce_(x, numpy)
    if comm.rank == 0:
        _write(comm, out + ".pids", {"pids": [m["pid"] for m in comm.members("numpy")]})
    else:
        comm.members("numpy")
    start = time.monotonic()
    try:
        if comm.rank == 1:
            if mode == "raise":
                raise ValueError("rank 1 fails on purpose")
            os.kill(os.getpid(), signal.SIGSTOP if mode == "stop" else signal.SIGKILL)
        for _ in range(5):
            comm.allreduce_(x, numpy)
    except RankFailed as exc:
        comm.notify_failure(exc)
        _write(comm, out, {"error": str(exc), "rank": exc.rank, "after": time.monotonic() - start},
               force=True)
        sys.exit(2)
    except ValueError as exc:
        comm.notify_failure(exc)
        sys.stdout.write(f"rank {comm.rank}: root heard {comm.wait_for_root()}\n")
        sys.exit(2)


def _write(comm, out, result, force=False):
    if comm.rank == 0 or force:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
