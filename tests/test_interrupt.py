"""Interrupted command-line runs, beyond test_resume_kill.py: Ctrl-C inside an epoch of
``python -m nnx`` and the printed ``-m`` command that resumes it bitwise; a second Ctrl-C
that aborts a checkpoint write and leaves the previous checkpoint; kill -9 while a resumed
run rewrites config.json.

``NNX_TEST_SLOW_WRITE=<seconds>`` makes every atomic write pause between writing its
temporary file and renaming it over the target, which opens a window to land in.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nnx.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")


def _env(**extra):
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), **extra}


def _start(head, args, cwd, **env):
    return subprocess.Popen([*head, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env))


def _run(command, cwd, **env):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180,
                          env=_env(**env))


def _wait_for(predicate, proc, timeout=60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.005)
    return False


def _rows(path: Path) -> int:
    try:
        return len(path.read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def _temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp" in p.name]


def _params(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


MODULE = [sys.executable, "-m", "nnx"]
SCRIPT_HEAD = [sys.executable, SCRIPT]
# 135 steps an epoch with dropout masks: a Ctrl-C lands inside an epoch almost always
SPIRALS = ["--dataset", "spirals", "--epochs", "30", "--batch-size", "8", "--dropout", "0.1",
           "--seed", "2", "--quiet"]


def test_ctrl_c_inside_an_epoch_of_python_m_nnx_resumes_bitwise(tmp_path):
    full = tmp_path / "full"
    r = _run([*MODULE, *SPIRALS, "--out", str(full)], tmp_path)
    assert r.returncode == 0, r.stderr
    part = tmp_path / "part"
    proc = _start(MODULE, [*SPIRALS, "--out", str(part)], tmp_path)
    try:
        assert _wait_for(lambda: _rows(part / "metrics.csv") >= 2, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = re.search(r"interrupted at epoch (\d+), step (\d+); checkpoint saved", err)
    assert stopped, err
    epoch, step = int(stopped[1]), int(stopped[2])
    meta = load_checkpoint(part / "checkpoint.npz")["meta"]
    assert meta["step"] == step and 2 <= epoch < 30
    # inside an epoch the checkpoint records where; after an epoch's last step it need not
    assert meta.get("resume_point") is not None or step % 135 == 0
    command = shlex.split(err.strip().splitlines()[-1])
    assert command == [sys.executable, "-m", "nnx", "--resume", str(part)]
    resumed = _run(command, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _params(full / "model.npz"), _params(part / "model.npz")
    assert a.keys() == b.keys() and a
    assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
    epochs = [line.split(",")[0] for line in (part / "metrics.csv").read_text().splitlines()]
    assert epochs == ["epoch", *map(str, range(1, 31))]


def test_a_second_ctrl_c_aborts_the_write_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _start(SCRIPT_HEAD, [*SPIRALS, "--out", str(out)], tmp_path, NNX_TEST_SLOW_WRITE="1")
    try:
        assert _wait_for((out / "checkpoint.npz").exists, proc)
        proc.send_signal(signal.SIGINT)
        for line in proc.stderr:  # the handler has run: the next Ctrl-C raises
            if line.startswith("interrupt:"):
                break
        assert _wait_for(lambda: bool(_temporaries(out)), proc)  # a write is in progress
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    lines = rest.strip().splitlines()
    assert lines[-2].startswith("aborted by Ctrl-C without saving;"), rest
    assert str(out / "checkpoint.npz") in lines[-2]
    assert not _temporaries(out)  # the aborted write removed its temporary file
    saved = load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"]
    assert 1 <= saved < 30
    resumed = _run(shlex.split(lines[-1]), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] == 30


def test_kill_while_a_resumed_run_rewrites_config_json(tmp_path):
    out = tmp_path / "run"
    first = _run([*SCRIPT_HEAD, "--dataset", "xor", "--epochs", "2", "--quiet", "--out",
                  str(out)], tmp_path)
    assert first.returncode == 0, first.stderr
    config_before = (out / "config.json").read_bytes()
    proc = _start(SCRIPT_HEAD, ["--resume", str(out), "--epochs", "4", "--quiet"], tmp_path,
                  NNX_TEST_SLOW_WRITE="3")
    try:
        assert _wait_for(lambda: any(n.startswith(".config.json.tmp-")
                                     for n in _temporaries(out)), proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "config.json").read_bytes() == config_before  # whole, and the old one
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] == 2
    again = _run([*SCRIPT_HEAD, "--resume", str(out), "--epochs", "4", "--quiet"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] == 4
    assert _rows(out / "metrics.csv") == 4
    assert not _temporaries(out)  # the killed run's temporary file was cleaned up
