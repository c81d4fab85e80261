"""Data-parallel training: the communicators, and K ranks against one process.

Runs real MPI jobs (``mpiexec -n 2``, from the ``mpi`` extra's mpich wheel)
of the programs in tests/mpi_worker.py. Skipped, saying why, without mpi4py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mpi_worker.py"


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed "
                        "(pip install 'nnx-trainer[mpi]')")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("mpi4py is installed but no mpiexec was found")
    return found


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", **extra)
    return env


def mpirun(n: int, *args, timeout: float = 90, **env) -> subprocess.CompletedProcess:
    """``mpiexec -n n python tests/mpi_worker.py args...`` in the repository."""
    command = [_mpiexec(), "-n", str(n), sys.executable, str(WORKER), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- the communicator -----------------------------------------------------------

def test_mpi_collectives_between_two_ranks(tmp_path):
    out = tmp_path / "out.json"
    proc = mpirun(2, "collectives", out)
    assert proc.returncode == 0, proc.stderr
    r = _json(out)
    assert r["size"] == 2 and r["in_place"] is True
    assert r["rank_sum"] == [3.0] * 5  # 1 + 2 on each element
    assert r["broadcast"] == [0.0, 1.0, 2.0, 3.0]
    assert r["min"] == [3] and r["max"] == [4]
    assert r["object"] == {"from": 0}
    assert r["gathered"] == [["rank", 0], ["rank", 1]]
    assert [m["rank"] for m in r["members"]] == [0, 1]
    assert len({m["pid"] for m in r["members"]}) == 2
    assert r["describe"].startswith("MPI (")
    if "torch_sum" in r:
        assert r["torch_sum"] == [0.0, 3.0, 6.0]


def test_a_rank_that_raises_stops_the_others_at_once_naming_it(tmp_path):
    out = tmp_path / "out.json"
    start = time.monotonic()
    proc = mpirun(2, "fault", out, "raise", 60)
    took = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    r = _json(out)
    assert r["rank"] == 1
    assert r["error"] == "rank 1 of 2 stopped: ValueError: rank 1 fails on purpose"
    assert r["after"] < 5 and took < 30  # not the 60 s timeout
    assert "rank 1: root heard True" in proc.stdout


def test_a_stopped_rank_times_out_and_is_named(tmp_path):
    out = tmp_path / "out.json"
    start = time.monotonic()
    proc = mpirun(2, "fault", out, "stop", 2)
    took = time.monotonic() - start
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: rank 1 of 2 did not reach the all-reduce within 2 s (stuck, stopped or dead); "
        "stopping all 2 ranks. Look at that rank's output; raise the limit with timeout= if a "
        "step can take that long"], proc.stderr
    assert took < 2 + 1 + 15  # the timeout, the grace for the others' notices, start-up


def test_a_killed_rank_ends_the_job_naming_its_pid(tmp_path):
    out = tmp_path / "out.json"
    start = time.monotonic()
    proc = mpirun(2, "fault", out, "kill", 60)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 30  # mpiexec cleans up: no timeout needed
    pids = _json(Path(str(out) + ".pids"))["pids"]
    text = proc.stdout + proc.stderr
    assert f"PID {pids[1]} " in text and "EXIT CODE: 9" in text, text


def test_several_ranks_without_mpi4py_is_one_clear_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from nnx.distributed import connect\n"
            "from nnx.errors import MissingExtra\n"
            "try:\n    connect('auto', 'cpu')\n"
            "except MissingExtra as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=_env(PMI_SIZE="2", PMI_RANK="0"))
    assert proc.returncode == 0, proc.stderr
    assert "training on more than one process needs the mpi4py package" in proc.stdout
    assert "pip install 'nnx-trainer[mpi]'" in proc.stdout


def test_one_process_needs_no_mpi():
    from nnx.distributed import SingleProcess, connect, launched_size

    assert launched_size() == 1 or os.environ.get("PMI_SIZE")
    comm = connect("auto", "cpu")
    assert isinstance(comm, SingleProcess) and (comm.rank, comm.size) == (0, 1)
    assert isinstance(connect("off", "cuda"), SingleProcess)
