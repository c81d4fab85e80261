"""One run directory, one writer: the directory's lock (``flock`` on ``.nnx-lock``) makes a
second run into the same ``--out``, or a ``--resume`` while the run trains, fail at once
naming the other process; the lock of a killed process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnx import cli
from nnx.checkpoint import load_checkpoint
from nnx.errors import ConfigError
from nnx.run_dir import LOCK_NAME, RunDir

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "xor", "--hidden", "4", "--no-doctor", "--no-lr-find", "--quiet"]

pytestmark = pytest.mark.skipif(os.name == "nt", reason="flock is POSIX")


def _one_error(code, err) -> str:
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_locked_directory_names_its_holder_and_is_free_once_released(tmp_path):
    first = RunDir.create(tmp_path / "run")
    assert (tmp_path / "run" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    for resume in (False, True):
        with pytest.raises(ConfigError, match=rf"in use: another nnx process \(pid "
                                              rf"{os.getpid()}\) is training into it"):
            RunDir.create(tmp_path / "run", resume=resume)
    first.close()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    RunDir.create(tmp_path / "run").close()


def _rows(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()[1:]
    except FileNotFoundError:
        return []


def _start(out: Path, cwd: Path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT),
           "NNX_TEST_SLOW_WRITE": "0.3"}  # every epoch's checkpoint takes 0.3 s
    return subprocess.Popen([sys.executable, "-m", "nnx", *QUICK, "--epochs", "200", "--out",
                             str(out)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait(predicate, proc, timeout=60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_a_second_writer_fails_at_once_and_a_killed_ones_lock_is_taken_over(tmp_path,
                                                                            capsys):
    out = tmp_path / "run"
    proc = _start(out, tmp_path)
    try:
        _wait((out / "checkpoint.npz").exists, proc)
        t0 = time.monotonic()
        second = cli.main([*QUICK, "--epochs", "2", "--out", str(out)])
        line = _one_error(second, capsys.readouterr().err)
        assert f"{out} is in use: another nnx process (pid {proc.pid})" in line
        resumed = cli.main(["--resume", str(out), "--quiet"])
        line = _one_error(resumed, capsys.readouterr().err)
        assert f"(pid {proc.pid})" in line and "before resuming" in line
        assert time.monotonic() - t0 < 10  # at once, not after the other run
        assert proc.poll() is None  # the first run goes on undisturbed
        proc.send_signal(signal.SIGKILL)  # dies holding the lock: its file stays behind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (out / LOCK_NAME).read_text().split()[0] == str(proc.pid)  # a stale lock
    done = load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"]
    code = cli.main(["--resume", str(out), "--epochs", str(done + 1), "--quiet"])
    assert code == 0, capsys.readouterr().err
    epochs = [int(row.split(",")[0]) for row in _rows(out / "metrics.csv")]
    assert epochs == list(range(1, done + 2))  # one writer at a time: no epoch interleaved
    assert not (out / LOCK_NAME).exists()
