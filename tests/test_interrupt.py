"""Interrupted command-line runs, beyond test_resume_kill.py: Ctrl-C inside an epoch of
``python -m nnx`` and the printed ``-m`` command that resumes it bitwise; a second Ctrl-C
that aborts a checkpoint write and leaves the previous checkpoint; kill -9 while a resumed
run rewrites config.json; an interrupt on an epoch's last step (every step with one full
batch) that saves and resumes bitwise instead of ending the run as finished; SIGTERM
handled like Ctrl-C (exit 143); Ctrl-C while nnx imports (one line, exit 130).

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
from pathlib import Path

import numpy as np
import pytest
from train_command import csv_rows, wait_for

import nnx
from nnx.checkpoint import load_checkpoint, save_checkpoint
from nnx.train import Callback, Trainer

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
        assert wait_for(lambda: csv_rows(part / "metrics.csv") >= 2, proc)
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
        assert wait_for((out / "checkpoint.npz").exists, proc)
        proc.send_signal(signal.SIGINT)
        for line in proc.stderr:  # the handler has run: the next Ctrl-C raises
            if line.startswith("interrupt:"):
                break
        assert wait_for(lambda: bool(_temporaries(out)), proc)  # a write is in progress
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
        assert wait_for(lambda: any(n.startswith(".config.json.tmp-")
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
    assert csv_rows(out / "metrics.csv") == 4
    assert not _temporaries(out)  # the killed run's temporary file was cleaned up


# --- an interrupt on an epoch's last step, SIGTERM, Ctrl-C while starting -------------------


class _InterruptAt(Callback):
    """Ask for an interrupt during global step ``step`` (as a signal handler would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, state):
        if state.step == self.step:
            trainer.request_interrupt()


def _spirals():
    return nnx.data.spirals(n=120, seed=3)


def _trainer():
    return Trainer(nnx.mlp([2, 16, 3], dropout=0.2), lr=0.01, seed=4)


@pytest.mark.parametrize("batch_size, step", [(32, 2), (32, 5), ("full", 1), ("full", 5)])
def test_an_interrupt_on_an_epochs_last_step_stops_and_resumes_bitwise(tmp_path, batch_size,
                                                                       step):
    """96 training examples in batches of 32: step 2 is the first epoch's last, step 5 the
    last one of all; with one full batch every step is an epoch's last."""
    data = _spirals()
    full = _trainer()
    full.fit(data.x_train, data.y_train, epochs=6 if batch_size == "full" else 2,
             batch_size=batch_size, validation_split=0.2)
    part = _trainer()
    part.fit(data.x_train, data.y_train, epochs=len(full.history), batch_size=batch_size,
             validation_split=0.2, callbacks=[_InterruptAt(step)])
    per_epoch = part.steps_per_epoch
    assert part.interrupted_at is not None  # not a finished run
    assert part.interrupted_at["batch"] == 0
    assert part.interrupted_at["epoch"] == part.completed_epochs == (step + 1) // per_epoch
    save_checkpoint(tmp_path / "c.npz", part)
    assert load_checkpoint(tmp_path / "c.npz")["meta"]["resume_point"]["batch"] == 0
    again = _trainer()
    h = again.fit(data.x_train, data.y_train, epochs=len(full.history), batch_size=batch_size,
                  validation_split=0.2, resume=tmp_path / "c.npz")
    assert again.interrupted_at is None and h["loss"] == full.history["loss"]
    for k, v in full.model.get_weights().items():
        assert np.array_equal(again.model.get_weights()[k], v), k


def _interrupted_cli(sig, args, out, tmp_path):
    proc = _start(SCRIPT_HEAD, [*args, "--out", str(out)], tmp_path)
    try:
        assert wait_for(lambda: csv_rows(out / "metrics.csv") >= 3, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


FULL_BATCH = ["--dataset", "xor", "--hidden", "4", "--batch-size", "full", "--epochs", "60",
              "--dropout", "0.1", "--seed", "5", "--no-doctor", "--no-lr-find", "--quiet"]


def test_ctrl_c_with_one_full_batch_and_sigterm_save_and_resume_bitwise(tmp_path):
    """With --batch-size full every Ctrl-C lands on an epoch's last step: it saves, prints
    the resume command and exits 130 like any other. SIGTERM (timeout, schedulers, docker
    stop) does the same with exit status 143."""
    full = tmp_path / "full"
    r = _run([*SCRIPT_HEAD, *FULL_BATCH, "--out", str(full)], tmp_path)
    assert r.returncode == 0, r.stderr
    for sig, status, word in ((signal.SIGINT, 130, "interrupt:"),
                              (signal.SIGTERM, 143, "terminated:")):
        part = tmp_path / sig.name
        code, err = _interrupted_cli(sig, FULL_BATCH, part, tmp_path)
        assert code == status, err
        assert word in err and "Traceback" not in err
        stopped = re.search(r"interrupted at epoch (\d+), step (\d+); checkpoint saved", err)
        assert stopped and int(stopped[1]) == int(stopped[2]) >= 3, err  # a step an epoch
        assert not (part / "summary.json").exists() and not (part / "model.npz").exists()
        command = shlex.split(err.strip().splitlines()[-1])
        assert command[-2:] == ["--resume", str(part)]
        resumed = _run(command, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        a, b = _params(full / "model.npz"), _params(part / "model.npz")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        epochs = [line.split(",")[0] for line in (part / "metrics.csv").read_text().splitlines()]
        assert epochs == ["epoch", *map(str, range(1, 61))]


_CTRL_C_IN_IMPORT = """
import os, runpy, signal, sys

class CtrlC:  # a real SIGINT while nnx imports NumPy: as if the user pressed Ctrl-C then
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = [sys.argv[1], "--dataset", "xor", "--epochs", "1"]
if sys.argv[0] == "-m":
    sys.argv[0] = "nnx"
    runpy.run_module("nnx", run_name="__main__", alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("how", ["-m", SCRIPT])
def test_ctrl_c_while_nnx_starts_is_one_line_and_exit_130(tmp_path, how):
    r = _run([sys.executable, "-c", _CTRL_C_IN_IMPORT, how], tmp_path)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == "aborted by Ctrl-C while starting", r.stderr
    assert not (tmp_path / "runs").exists()
