"""Start MPI jobs for the distributed tests: ``mpiexec -n K python tests/mpi_worker.py``.

Uses the ``mpiexec`` of the ``mpi`` extra's mpich wheel (beside this Python), else
one on the PATH; a test that needs one is skipped, saying why, without mpi4py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mpi_worker.py"


def mpiexec() -> str:
    """The ``mpiexec`` to start jobs with; skips the test without mpi4py or an mpiexec."""
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed "
                        "(pip install 'nnx-trainer[mpi]')")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("mpi4py is installed but no mpiexec was found")
    return found


def env(**extra) -> dict:
    """The environment of a job: none of an enclosing MPI job's variables, one BLAS thread."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    out.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", **extra)
    return out


def mpirun(n: int, *args, timeout: float = 90, **extra) -> subprocess.CompletedProcess:
    """``mpiexec -n n python tests/mpi_worker.py args...`` in the repository."""
    command = [mpiexec(), "-n", str(n), sys.executable, str(WORKER), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env(**extra))


def read_json(path: Path) -> dict:
    """The JSON a job's rank 0 wrote."""
    return json.loads(path.read_text(encoding="utf-8"))

