"""The command line under mpiexec: ``mpiexec -n K python scripts/train.py ...``.

The first line names the ranks, the run equals one process's, a rank given other
data or killed stops the run, an interrupt checkpoints once and resumes bitwise,
and a resume with another number of ranks is refused. Skipped without mpi4py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mpi_launch import ROOT, env, mpiexec  # noqa: E402

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
DIGITS = ["--dataset", "digits", "--device", "cpu"]


def train_cli(n: int, *flags, timeout: float = 120) -> subprocess.CompletedProcess:
    """``mpiexec -n n python scripts/train.py flags...`` (``n = 0``: no mpiexec)."""
    head = [mpiexec(), "-n", str(n)] if n else []
    return subprocess.run([*head, *TRAIN, *map(str, flags)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env())


def _start(n: int, *flags) -> subprocess.Popen:
    return subprocess.Popen([mpiexec(), "-n", str(n), *TRAIN, *map(str, flags)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), start_new_session=True)


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.split(",") for line in lines]


def _wait_for_epochs(proc, csv: Path, epochs: int, limit: float = 90) -> None:
    start = time.monotonic()
    while len(_rows(csv)) < epochs + 1:  # the header, then one row per epoch
        assert proc.poll() is None and time.monotonic() - start < limit, proc.stderr.read()
        time.sleep(0.05)


def _pids(first_line: str) -> list[int]:
    import re

    return [int(p) for p in re.findall(r"rank \d+ \S+ \(pid (\d+) on ", first_line)]


def test_mpiexec_train_py_says_so_and_matches_one_process(tmp_path):
    import numpy as np

    two = train_cli(2, *DIGITS, "--epochs", 3, "--out", tmp_path / "k2")
    one = train_cli(0, *DIGITS, "--epochs", 3, "--out", tmp_path / "k1")
    assert two.returncode == 0 and one.returncode == 0, two.stderr + one.stderr
    first = two.stderr.splitlines()[0]
    assert first.startswith("nnx: Dataset('digits'") and " on 2 ranks over MPI (MPICH " in first
    assert len(_pids(first)) == 2 and "rank 0 numpy (pid " in first and "rank 1 numpy" in first
    assert two.stderr.count("done in ") == 1 and "Traceback" not in two.stderr
    k1, k2 = _rows(tmp_path / "k1" / "metrics.csv"), _rows(tmp_path / "k2" / "metrics.csv")
    assert k1[0] == k2[0] and len(k2) == 4
    for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
        i = k1[0].index(col)
        assert all(abs(float(a[i]) - float(b[i])) < 1e-5 for a, b in zip(k1[1:], k2[1:])), col
    with np.load(tmp_path / "k1" / "model.npz") as a, np.load(tmp_path / "k2" / "model.npz") as b:
        assert max(float(abs(a[k] - b[k]).max()) for k in a.files if k != "__meta__") < 1e-5
    import nnx

    assert nnx.load_checkpoint(tmp_path / "k2" / "checkpoint.npz")["meta"]["world_size"] == 2


def test_ranks_that_were_given_other_data_stop_with_one_error(tmp_path):
    out = tmp_path / "run"
    head = [*TRAIN, *DIGITS, "--epochs", "2", "--out", str(out)]
    command = [mpiexec(), "-n", "1", *head, ":", "-n", "1", *head, "--val-split", "0.2"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env())
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rank 1 has other training data than rank 0 (n, x, y differ); "
                      "every rank passes the whole training set (split the same way: the same "
                      "seed for validation_split) and the same batch size, and takes its share "
                      "of each batch itself"], proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "checkpoint.npz").exists()


def test_a_killed_rank_ends_the_run_whose_checkpoint_resumes(tmp_path):
    import nnx

    out = tmp_path / "run"
    proc = _start(2, *DIGITS, "--epochs", 12, "--out", out)
    _wait_for_epochs(proc, out / "metrics.csv", 2)
    start = time.monotonic()
    first = proc.stderr.readline()
    victim = _pids(first)[1]
    os.kill(victim, 9)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 15, stderr
    assert f"PID {victim} " in stdout + stderr and "EXIT CODE: 9" in stdout + stderr
    # epoch 2's checkpoint is written after its metrics row: the kill may come before it
    assert nnx.load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] >= 1
    resumed = train_cli(2, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r[0]) for r in _rows(out / "metrics.csv")[1:]] == list(range(1, 13))


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_interrupt_under_mpiexec_checkpoints_once_and_resumes_bitwise(tmp_path, signame):
    import signal

    import numpy as np

    whole, out = tmp_path / "whole", tmp_path / "run"
    assert train_cli(2, *DIGITS, "--epochs", 6, "--out", whole).returncode == 0
    proc = _start(2, *DIGITS, "--epochs", 6, "--out", out)
    _wait_for_epochs(proc, out / "metrics.csv", 2)
    os.kill(proc.pid, getattr(signal, signame))  # mpiexec passes it on to every rank
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[signame], stderr
    assert stderr.count("checkpoint saved. Resume with:") == 1, stderr
    assert f"mpiexec -n 2 {sys.executable} {ROOT / 'scripts' / 'train.py'} --resume {out}" \
        in stderr
    config = (out / "config.json").read_bytes()
    other = train_cli(3, "--resume", out)
    assert other.returncode == 2 and [line for line in other.stderr.splitlines()
                                      if line.startswith("error:")] == [
        f"error: {out / 'checkpoint.npz'} was written by a run on 2 rank(s), this one has 3; "
        "resume it with the same count (mpiexec -n 2 ...): the batch split, the dropout "
        "streams and the batch statistics depend on the number of ranks"], other.stderr
    assert (out / "config.json").read_bytes() == config
    resumed = train_cli(2, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    with np.load(whole / "model.npz") as a, np.load(out / "model.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")
