"""Resuming a run from the command line: ``--resume`` refuses other data, another
architecture, a damaged checkpoint or config.json and leaves the run as it was; a
finished run asks for more epochs; Ctrl-C checkpoints and the resumed run is bitwise
equal to an uninterrupted one; kill -9 during a checkpoint write keeps the last one.

Every case runs the train command in a subprocess (tests/train_command.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from train_command import SCRIPT, error_line, train, weights


def _npz(t: Path, x, y) -> list[str]:
    np.savez(t / "data.npz", x=x, y=y)
    return ["--dataset", str(t / "data.npz")]


_rng = np.random.default_rng(0)


# --- refused resumes leave the run as it was --------------------------------------------------


def _copy(run: Path, tmp_path: Path) -> tuple[Path, dict]:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", {p.name: p.read_bytes() for p in run.iterdir()}


def _unchanged(run: Path, before: dict) -> None:
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_with_a_different_architecture_is_refused(tmp_path):
    out = tmp_path / "r"
    assert train(["--epochs", "1", "--quiet", "--out", str(out)], tmp_path).returncode == 0
    r = train(["--resume", str(out), "--hidden", "32", "--epochs", "2", "--quiet"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "layer" in r.stderr
    other = train(["--resume", str(out), "--dataset", "spirals", "--epochs", "2", "--quiet"],
                tmp_path)
    assert other.returncode == 2 and "Traceback" not in other.stderr


def test_resume_with_data_of_other_classes_names_the_output_count(digits_run, tmp_path):
    run, before = _copy(digits_run, tmp_path)
    data = _npz(tmp_path, _rng.normal(size=(60, 64)), np.arange(60) % 3)  # 64 features, 3 classes
    r = train(["--resume", str(run), *data, "--epochs", "2", "--quiet"], tmp_path)
    error_line(r, ["different model", "10 outputs", "needs 3"])
    _unchanged(run, before)


def test_resume_with_other_features_names_the_feature_count(digits_run, tmp_path):
    run, before = _copy(digits_run, tmp_path)
    r = train(["--resume", str(run), "--dataset", "moons", "--epochs", "2", "--quiet"], tmp_path)
    error_line(r, ["64 input features", "moons has 2"])
    _unchanged(run, before)


def test_corrupted_checkpoint_is_refused(tmp_path):
    out = tmp_path / "r"
    assert train(["--epochs", "1", "--quiet", "--out", str(out)], tmp_path).returncode == 0
    ckpt = out / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    r = train(["--resume", str(out), "--epochs", "2", "--quiet"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corrupted" in r.stderr or "truncated" in r.stderr


def test_resume_with_a_damaged_config_json(digits_run, tmp_path):
    run, _ = _copy(digits_run, tmp_path)
    (run / "config.json").write_text('{"settings": ')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = train(["--resume", str(run), "--epochs", "2", "--quiet"], tmp_path)
    error_line(r, ["config.json is damaged", "--resume"])
    _unchanged(run, before)


def test_resume_of_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing", tmp_path / "empty" / "c.npz"):
        r = train(["--resume", str(target), "--quiet"], tmp_path)
        error_line(r, ["nothing to resume", "checkpoint.npz"])
    assert not list((tmp_path / "empty").iterdir())


def test_resume_of_a_finished_run_asks_for_more_epochs(digits_run, tmp_path):
    run, _ = _copy(digits_run, tmp_path)
    r = train(["--resume", str(run), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: nothing to train")
    assert "--epochs N with N > 1" in lines[0]


def test_out_is_ignored_with_resume_and_says_so(digits_run, tmp_path):
    run, _ = _copy(digits_run, tmp_path)
    r = train(["--resume", str(run), "--epochs", "2", "--out", str(tmp_path / "other"),
               "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: --out is ignored with --resume" in r.stderr
    assert not (tmp_path / "other").exists()
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2


# --- interrupted runs -------------------------------------------------------------------------


SPIRALS = ["--dataset", "spirals", "--epochs", "300", "--seed", "1", "--dropout", "0.1",
           "--quiet"]


def _wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_checkpoints_and_resume_is_bitwise_equal(tmp_path):
    full = tmp_path / "full"
    assert train([*SPIRALS, "--out", str(full)], tmp_path).returncode == 0
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, SCRIPT, *SPIRALS, "--out", str(part)], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    metrics = part / "metrics.csv"
    assert _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) > 20)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    command = err.strip().splitlines()[-1].strip()
    resumed = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(full / "model.npz"), weights(part / "model.npz")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, SCRIPT, "--dataset", "spirals", "--epochs", "50",
                             "--quiet", "--out", str(out)], cwd=tmp_path,
                            env={**os.environ, "NNX_TEST_SLOW_WRITE": "1.5"},
                            stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoint.npz"
    assert _wait_for(ckpt.exists)
    assert _wait_for(lambda: any(p.name.startswith(".checkpoint.npz.tmp")
                                 for p in out.iterdir()))
    proc.kill()
    proc.communicate(timeout=30)
    import nnx

    state = nnx.load_checkpoint(ckpt)  # the previous checkpoint is intact
    assert state["meta"]["epoch"] >= 1
    r = train(["--resume", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "model.npz").exists()
