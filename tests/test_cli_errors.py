"""User mistakes through the command line, and what a bug looks like.

Each bad input runs ``scripts/train.py`` in a subprocess and checks: exit status 2,
exactly one ``error:`` line naming the problem (any other line is a ``warning:``), no
traceback, no temporary file and no model written. An internal failure is exit
status 1 with one line that says it is a bug; ``--debug`` raises the real exception.
The table of every setting's bad types and ranges is in test_bad_inputs.py.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from train_command import ROOT, error_line, train

from nnx import cli

# --- bad data, values, names, files and config files ------------------------------------------


def no_partial_files(directory: Path) -> bool:
    if not directory.exists():
        return True
    return not [p for p in directory.rglob("*") if ".tmp" in p.name or ".part" in p.name]


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


CASES = [
    # (id, args builder, exit code, words expected on stderr)
    ("length-mismatch", lambda t: ["--dataset", _npz(t / "a.npz", x=np.zeros((5, 3)),
                                                     y=np.zeros(4))], 2, ["5 rows", "4"]),
    ("negative-label", lambda t: ["--dataset", _npz(t / "b.npz", x=np.random.rand(20, 3),
                                                    y=np.r_[np.zeros(19), -1])], 2, ["negative"]),
    ("fractional-label", lambda t: ["--dataset", _csv(t, [0, 1, 2.5, 1] * 5), "--loss",
                                    "cross_entropy"], 2, ["labels", "whole numbers"]),
    ("nan-input", lambda t: ["--dataset", _npz(t / "c.npz", x=_with(np.random.rand(20, 3), np.nan),
                                               y=np.arange(20) % 2)], 2, ["NaN"]),
    ("inf-input", lambda t: ["--dataset", _npz(t / "d.npz", x=_with(np.random.rand(20, 3), np.inf),
                                               y=np.arange(20) % 2)], 2, ["infinite"]),
    ("empty", lambda t: ["--dataset", _npz(t / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0))], 2,
     ["empty"]),
    ("batch-zero", lambda t: ["--batch-size", "0"], 2, ["batch size"]),
    ("batch-negative", lambda t: ["--batch-size", "-3"], 2, ["batch size"]),
    ("unknown-activation", lambda t: ["--activation", "relu6"], 2, ["activation", "tanh"]),
    ("unknown-optimizer", lambda t: ["--optimizer", "adagrad"], 2, ["optimizer", "adam"]),
    ("unknown-loss", lambda t: ["--loss", "hinge"], 2, ["loss", "mse"]),
    ("unknown-init", lambda t: ["--init", "orthogonal"], 2, ["initialiser", "he_normal"]),
    ("unknown-schedule", lambda t: ["--schedule", "cyclic"], 2, ["schedule", "cosine"]),
    ("lr-zero", lambda t: ["--lr", "0"], 2, ["learning rate"]),
    ("lr-negative", lambda t: ["--lr", "-1"], 2, ["learning rate"]),
    ("hidden-zero", lambda t: ["--hidden", "0"], 2, ["hidden"]),
    ("hidden-text", lambda t: ["--hidden", "abc"], 2, ["hidden"]),
    ("hidden-negative", lambda t: ["--hidden", "64,-5"], 2, ["hidden"]),
    ("cuda-without-cupy", lambda t: ["--device", "cuda"], 2, ["CuPy", "install"]),
    ("unknown-device", lambda t: ["--device", "tpu"], 2, ["unknown device", "cpu"]),
    ("unknown-dataset", lambda t: ["--dataset", "cifar"], 2, ["unknown dataset", "digits"]),
    ("missing-file", lambda t: ["--dataset", str(t / "nope.npz")], 2, ["does not exist"]),
    ("bad-magic", lambda t: ["--dataset", "mnist", "--data-dir", _idx_dir(t, "magic")], 2,
     ["magic"]),
    ("truncated-idx", lambda t: ["--dataset", "mnist", "--data-dir", _idx_dir(t, "truncated")],
     2, ["truncated"]),
    ("checksum", lambda t: ["--dataset", "mnist", "--data-dir", _idx_dir(t, "checksum")], 2,
     ["SHA-256"]),
    ("unwritable-out", lambda t: ["--out", _file(t) + "/run"], 2, ["cannot write"]),
    ("bad-toml", lambda t: ["--config", _text(t, "a.toml", "epochs = = 3\n")], 2, ["TOML"]),
    ("unknown-key", lambda t: ["--config", _text(t, "b.toml", "epochz = 3\n")], 2,
     ["unknown setting", "epochs"]),
    ("wrong-type", lambda t: ["--config", _text(t, "c.toml", 'epochs = "many"\n')], 2,
     ["epochs", "int"]),
    ("escaping-path", lambda t: ["--config", _text(t, "d.toml", 'out = "../../elsewhere"\n')],
     2, ["escapes"]),
    ("resume-nothing", lambda t: ["--resume", str(t / "nothing")], 2, ["nothing to resume"]),
]


def _with(x, value):
    x = x.copy()
    x[3, 1] = value
    return x


def _csv(t: Path, labels) -> str:
    p = t / "labels.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i + 1},{lab}\n" for i, lab in enumerate(labels)))
    return str(p)


def _text(t: Path, name: str, body: str) -> str:
    (t / "cfg").mkdir(exist_ok=True)
    p = t / "cfg" / name
    p.write_text(body)
    return str(p)


def _file(t: Path) -> str:
    p = t / "a-file"
    p.write_text("not a directory")
    return str(p)


def _idx_dir(t: Path, fault: str) -> str:
    """A data dir with MNIST-named files carrying one fault."""
    d = t / f"mnist-{fault}"
    d.mkdir()
    from nnx.data import write_idx

    images, labels = np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.uint8)
    names = [("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
             ("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)]
    for name, arr in names:
        write_idx(d / name, arr)
    first = d / names[0][0]
    if fault == "magic":
        first.write_bytes(b"\x12\x34\x56\x78" + first.read_bytes()[4:])
    elif fault == "truncated":
        first.write_bytes(first.read_bytes()[:200])
    elif fault == "checksum":
        first.unlink()
        with gzip.open(d / (names[0][0] + ".gz"), "wb") as f:
            f.write(b"\x00\x00\x08\x03" + b"\x00" * 100)
    return str(d)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path):
    _, build, code, words = case
    out = tmp_path / "out"
    args = build(tmp_path)
    if "--out" not in args:
        args += ["--out", str(out)]
    r = train([*args, "--quiet", "--epochs", "1"], tmp_path)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    assert not (out / "model.npz").exists()
    assert no_partial_files(tmp_path)


# --- flag syntax, ranges, a GPU that cannot start, data the model cannot fit ------------------


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


def _npz_at(t: Path, x, y) -> list[str]:
    np.savez(t / "data.npz", x=x, y=y)
    return ["--dataset", str(t / "data.npz")]


def _toml(t: Path, body: str) -> list[str]:
    (t / "run.toml").write_text(body)
    return ["--config", str(t / "run.toml")]


_rng = np.random.default_rng(0)


MORE_CASES = [
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
    ("file-type", lambda t: (["--dataset", str(_write(t, "data.json", "{}"))], None),
     ["unknown file type", ".npz", ".csv"]),
    ("csv-text-cell", lambda t: (["--dataset", str(_write(t, "d.csv", "a,b,y\n1,2,0\n1,x,1\n"))],
                                 None), ["d.csv"]),
    ("npz-without-y", lambda t: (_npz_only_x(t), None), ["'y'"]),
    ("one-class", lambda t: (_npz_at(t, _rng.normal(size=(20, 3)), np.zeros(20)), None),
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


def _write(t: Path, name: str, body: str) -> Path:
    (t / name).write_text(body)
    return t / name


def _npz_only_x(t: Path) -> list[str]:
    np.savez(t / "x.npz", x=np.zeros((10, 2)))
    return ["--dataset", str(t / "x.npz")]


@pytest.mark.parametrize("case", MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path):
    _, build, words = case
    args, env = build(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    if "--epochs" not in args:
        args = [*args, "--epochs", "1"]
    r = train([*args, "--quiet", "--out", str(tmp_path / "out")], work, env)
    error_line(r, words)
    _no_leftovers(tmp_path)
    assert not list(work.iterdir())


# --- bugs and --debug -------------------------------------------------------------------------


def test_an_internal_failure_is_exit_1_and_says_it_is_a_bug(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_finish", broken)
    argv = ["--dataset", "xor", "--epochs", "1", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "internal error: ZeroDivisionError" in lines[0]
    assert "bug" in lines[0] and "--debug" in lines[0]
    with pytest.raises(ZeroDivisionError):  # --debug shows the real exception
        cli.main([*argv, "--debug", "--out", str(tmp_path / "b")])


def test_a_user_error_with_debug_raises_the_nnx_error(tmp_path):
    from nnx.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown optimizer"):
        cli.main(["--optimizer", "adagrad", "--debug", "--out", str(tmp_path / "r")])
