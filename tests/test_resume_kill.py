"""Interrupted runs lose nothing: Ctrl-C, kill -9 inside a checkpoint write, exact resume.

The command-line tests run ``scripts/train.py`` in a subprocess. ``NNX_TEST_SLOW_WRITE``
makes every atomic write pause between writing its temporary file and renaming it, which
slows epochs down enough to interrupt them and opens a window to kill the process
mid-write.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_command import csv_rows, wait_for

import nnx
from nnx import backends
from nnx.checkpoint import load_checkpoint, save_checkpoint
from nnx.train import Callback, ModelCheckpoint, Trainer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")
SPIRALS = ["--dataset", "spirals", "--epochs", "40", "--seed", "1", "--dropout", "0.1",
           "--quiet"]


def _env(**extra):
    return {**os.environ, "MPLBACKEND": "Agg", **extra}


def _train(args, cwd, timeout=180, **env):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=_env(**env))


def _start(args, cwd, **env):
    return subprocess.Popen([sys.executable, SCRIPT, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env))


def _params(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def _assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_sigint_saves_prints_resume_and_ends_bitwise_equal(tmp_path):
    full = tmp_path / "full"
    assert _train([*SPIRALS, "--out", str(full)], tmp_path).returncode == 0
    part = tmp_path / "part"
    # a pause in each checkpoint write slows the epochs so the signal lands mid-run
    proc = _start([*SPIRALS, "--out", str(part)], tmp_path, NNX_TEST_SLOW_WRITE="0.05")
    try:
        assert wait_for(lambda: csv_rows(part / "metrics.csv") >= 3, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert "Resume with:" in lines[-2]
    command = shlex.split(lines[-1])
    assert command[-2:] == ["--resume", str(part)]
    done = csv_rows(part / "metrics.csv")
    assert 3 <= done < 40
    assert load_checkpoint(part / "checkpoint.npz")["meta"]["epoch"] == done
    assert not (part / "model.npz").exists()
    assert not [p for p in part.iterdir() if ".tmp" in p.name]

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                             timeout=180, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    _assert_bitwise_equal(_params(full / "model.npz"), _params(part / "model.npz"))
    # the logs hold each epoch once, as an uninterrupted run's do
    epochs = [line.split(",")[0] for line in (part / "metrics.csv").read_text().splitlines()]
    assert epochs == ["epoch", *map(str, range(1, 41))]
    full_loss = [line.split(",")[1] for line in (full / "metrics.csv").read_text().splitlines()]
    part_loss = [line.split(",")[1] for line in (part / "metrics.csv").read_text().splitlines()]
    assert part_loss == full_loss


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _start(["--dataset", "spirals", "--epochs", "40", "--quiet", "--out", str(out)],
                  tmp_path, NNX_TEST_SLOW_WRITE="2")
    ckpt = out / "checkpoint.npz"

    def writing():
        return ckpt.exists() and any(p.name.startswith(".checkpoint.npz.tmp-")
                                     for p in out.iterdir())

    try:
        assert wait_for(writing, proc, timeout=90), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(ckpt)  # the previous one is whole
    assert state["meta"]["epoch"] >= 1 and state["params"]
    r = _train(["--resume", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert nnx.checkpoint.load(out / "model.npz").n_in == 2
    assert load_checkpoint(ckpt)["meta"]["epoch"] == 40
    # the killed process's temporary file was never renamed; the resumed run removed it
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


# --- in-process resume -----------------------------------------------------------------------


def _data():
    ds = nnx.data.spirals(n=300, seed=4)
    return ds.x_train, ds.y_train


def _trainer(device):
    return Trainer(nnx.mlp([2, 16, 16, 3], dropout=0.2), "cross_entropy",
                   nnx.Adam(0.01), device=device, seed=3)


DEVICES = ["numpy", "strict:device1"]


def _backend(device):
    try:
        return backends.get(device)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("device", DEVICES)
def test_resume_after_an_epoch_is_bitwise_equal(tmp_path, device):
    b = _backend(device)
    x, y = _data()
    ref = _trainer(b)
    ref_hist = ref.fit(x, y, epochs=4, batch_size=32, validation_split=0.2)

    first = _trainer(b)
    path = tmp_path / "ckpt.npz"
    first.fit(x, y, epochs=2, batch_size=32, validation_split=0.2,
              callbacks=[ModelCheckpoint(path)])
    second = _trainer(b)
    hist = second.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, resume=path)
    _assert_bitwise_equal(ref.model.get_weights(), second.model.get_weights())
    assert hist["loss"] == ref_hist["loss"] and hist["epoch"] == [1, 2, 3, 4]
    assert second.step == ref.step


class _InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, state):
        if state.step == self.step:
            trainer.request_interrupt()


@pytest.mark.parametrize("device", DEVICES)
def test_resume_from_the_middle_of_an_epoch_is_bitwise_equal(tmp_path, device):
    b = _backend(device)
    x, y = _data()
    ref = _trainer(b)
    ref.fit(x, y, epochs=3, batch_size=32)
    steps = ref.steps_per_epoch

    first = _trainer(b)
    first.fit(x, y, epochs=3, batch_size=32, callbacks=[_InterruptAt(steps + 2)])
    assert first.interrupted_at["epoch"] == 1 and first.interrupted_at["batch"] == 3
    assert first.step == steps + 3 and len(first.history) == 1
    path = tmp_path / "mid.npz"
    save_checkpoint(path, first)
    assert load_checkpoint(path)["meta"]["resume_point"]["batch"] == 3

    second = _trainer(b)
    hist = second.fit(x, y, epochs=3, batch_size=32, resume=path)
    _assert_bitwise_equal(ref.model.get_weights(), second.model.get_weights())
    assert second.step == ref.step and hist["epoch"] == [1, 2, 3]
    assert hist["loss"] == pytest.approx(ref.history["loss"], rel=1e-6)
