"""More user mistakes through the command line, beyond the table in test_bad_inputs.py:
flag syntax, value ranges, a CUDA install without a usable GPU, data the model cannot
fit, a run that diverges, and resuming with the wrong data or a damaged config.json.

Each case runs ``scripts/train.py`` in a subprocess and checks: exit status 2, exactly
one ``error:`` line holding the key words (any other line is a ``warning:``), no
traceback, no temporary file and no model written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")


def train(args, cwd, env=None, timeout=120):
    full = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full)


def _error_line(r, words) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), r.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    return errors[0]


def _no_leftovers(root: Path) -> None:
    assert not [p for p in root.rglob("*") if ".tmp" in p.name or ".part" in p.name]
    assert not list(root.rglob("model.npz"))


def _fake_cupy(t: Path) -> dict:
    """A ``cupy`` that is installed but cannot start: what a machine without a CUDA driver
    shows. It comes first on the path, so the case is the same with or without real CuPy."""
    pkg = t / "fake" / "cupy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        'raise ImportError("libcuda.so.1: cannot open shared object file")\n')
    return {"PYTHONPATH": os.pathsep.join([str(t / "fake"), str(ROOT)])}


def _npz(t: Path, x, y) -> list[str]:
    np.savez(t / "data.npz", x=x, y=y)
    return ["--dataset", str(t / "data.npz")]


def _toml(t: Path, body: str) -> list[str]:
    (t / "run.toml").write_text(body)
    return ["--config", str(t / "run.toml")]


_rng = np.random.default_rng(0)

CASES = [
    # id, builder -> (args, extra environment), key words of the error line
    ("unknown-flag", lambda t: (["--epoch", "3"], None),
     ["unrecognized arguments: --epoch", "did you mean --epochs"]),
    ("lr-not-a-number", lambda t: (["--lr", "fast"], None), ["--lr", "a number", "fast"]),
    ("lr-nan", lambda t: (["--lr", "nan"], None), ["--lr", "finite"]),
    ("epochs-fraction", lambda t: (["--epochs", "2.5"], None), ["--epochs", "integer", "2.5"]),
    ("epochs-zero", lambda t: (["--epochs", "0"], None), ["epochs", "at least 1"]),
    ("dropout-one", lambda t: (["--dropout", "1"], None), ["dropout", "[0, 1)"]),
    ("val-split-one", lambda t: (["--val-split", "1"], None), ["val-split", "[0, 1)"]),
    ("dtype-float16", lambda t: (["--dtype", "float16"], None), ["dtype", "float32 or float64"]),
    ("clip-norm-zero", lambda t: (["--clip-norm", "0"], None), ["clip-norm", "positive"]),
    ("warmup-negative", lambda t: (["--warmup", "-1"], None), ["warmup", "0 or more"]),
    ("weight-decay-negative", lambda t: (["--weight-decay", "-0.1"], None),
     ["weight-decay", "0 or more"]),
    ("cuda-installed-without-gpu", lambda t: (["--device", "cuda"], _fake_cupy(t)),
     ["CuPy is installed but no CUDA GPU is usable", "libcuda", "nvidia-smi", "--device cpu"]),
    ("cuda-bad-index", lambda t: (["--device", "cuda:x"], _fake_cupy(t)),
     ["bad CUDA device", "cuda:N"]),
    ("file-type", lambda t: (["--dataset", str(_text(t, "data.json", "{}"))], None),
     ["unknown file type", ".npz", ".csv"]),
    ("csv-text-cell", lambda t: (["--dataset", str(_text(t, "d.csv", "a,b,y\n1,2,0\n1,x,1\n"))],
                                 None), ["d.csv"]),
    ("npz-without-y", lambda t: (_npz_only_x(t), None), ["'y'"]),
    ("one-class", lambda t: (_npz(t, _rng.normal(size=(20, 3)), np.zeros(20)), None),
     ["fewer than two classes"]),
    ("regression-loss-on-labels", lambda t: (["--loss", "mse"], None),
     ["mse is for regression", "--loss cross_entropy"]),
    ("toml-lr-string", lambda t: (_toml(t, 'lr = "fast"\n'), None), ["'lr' must be", "str"]),
    ("toml-hidden-list-with-text", lambda t: (_toml(t, 'hidden = [64, "a"]\n'), None),
     ["hidden sizes"]),
    ("toml-batch-zero", lambda t: (_toml(t, "[training]\nbatch_size = 0\n"), None),
     ["batch size", "positive"]),
    ("diverging-run", lambda t: (["--dataset", "blobs", "--optimizer", "sgd", "--lr", "1e6",
                                  "--epochs", "3"], None),
     ["NaN or infinity", "step", "dense_", "--lr", "no checkpoint was written"]),
]


def _text(t: Path, name: str, body: str) -> Path:
    (t / name).write_text(body)
    return t / name


def _npz_only_x(t: Path) -> list[str]:
    np.savez(t / "x.npz", x=np.zeros((10, 2)))
    return ["--dataset", str(t / "x.npz")]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path):
    _, build, words = case
    args, env = build(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    if "--epochs" not in args:
        args = [*args, "--epochs", "1"]
    r = train([*args, "--quiet", "--out", str(tmp_path / "out")], work, env)
    _error_line(r, words)
    _no_leftovers(tmp_path)
    assert not list(work.iterdir())


# --- resuming with the wrong data or settings ------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("digits")
    r = train(["--epochs", "1", "--quiet", "--out", str(base / "run")], base)
    assert r.returncode == 0, r.stderr
    return base / "run"


def _copy(run: Path, tmp_path: Path) -> tuple[Path, dict]:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", {p.name: p.read_bytes() for p in run.iterdir()}


def _unchanged(run: Path, before: dict) -> None:
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_with_data_of_other_classes_names_the_output_count(digits_run, tmp_path):
    run, before = _copy(digits_run, tmp_path)
    data = _npz(tmp_path, _rng.normal(size=(60, 64)), np.arange(60) % 3)  # 64 features, 3 classes
    r = train(["--resume", str(run), *data, "--epochs", "2", "--quiet"], tmp_path)
    _error_line(r, ["different model", "10 outputs", "needs 3"])
    _unchanged(run, before)


def test_resume_with_other_features_names_the_feature_count(digits_run, tmp_path):
    run, before = _copy(digits_run, tmp_path)
    r = train(["--resume", str(run), "--dataset", "moons", "--epochs", "2", "--quiet"], tmp_path)
    _error_line(r, ["64 input features", "moons has 2"])
    _unchanged(run, before)


def test_resume_with_a_damaged_config_json(digits_run, tmp_path):
    run, _ = _copy(digits_run, tmp_path)
    (run / "config.json").write_text('{"settings": ')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = train(["--resume", str(run), "--epochs", "2", "--quiet"], tmp_path)
    _error_line(r, ["config.json is damaged", "--resume"])
    _unchanged(run, before)


def test_resume_of_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing", tmp_path / "empty" / "c.npz"):
        r = train(["--resume", str(target), "--quiet"], tmp_path)
        _error_line(r, ["nothing to resume", "checkpoint.npz"])
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
