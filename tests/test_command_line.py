"""The train command as a user runs it: files written, bad inputs, Ctrl-C and kill -9.

Every case runs ``scripts/train.py`` in a subprocess. A user error must end
with exit status 2, one line on stderr naming the problem, no traceback, and
no half-written file in the run directory.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "scripts" / "train.py")


def run(args, cwd, env=None, timeout=120):
    full_env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def no_partial_files(directory: Path) -> bool:
    if not directory.exists():
        return True
    return not [p for p in directory.rglob("*") if ".tmp" in p.name or ".part" in p.name]


def test_default_digits_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    r = run(["--epochs", "3", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stderr and "Traceback" not in r.stderr
    for name in ("config.json", "metrics.csv", "metrics.jsonl", "curves.png", "model.npz",
                 "checkpoint.npz", "summary.json"):
        assert (out / name).is_file(), name
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["dataset"] == {"value": "digits", "source": "default"}
    assert settings["epochs"] == {"value": 3, "source": "flag"}
    assert settings["hidden"]["source"] == "dataset"
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("epoch,loss,accuracy")
    assert len((out / "metrics.jsonl").read_text().strip().splitlines()) == 3
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out / "curves.png").ndim == 3
    import nnx

    model = nnx.load(out / "model.npz", device="numpy")
    assert model.n_in == 64 and model.n_out == 10


def test_help_lists_every_flag_with_its_default(tmp_path):
    r = run(["--help"], tmp_path)
    assert r.returncode == 0
    for flag in ("--device", "--dataset", "--data-dir", "--hidden", "--activation", "--init",
                 "--loss", "--optimizer", "--lr", "--momentum", "--weight-decay", "--l2",
                 "--dropout", "--batchnorm", "--batch-size", "--epochs", "--schedule",
                 "--warmup", "--clip-norm", "--early-stopping", "--val-split", "--seed",
                 "--dtype", "--out", "--resume", "--config", "--quiet", "--doctor"):
        assert flag in r.stdout, flag
    assert "(default: auto)" in r.stdout
    m = subprocess.run([sys.executable, "-m", "nnx", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert m.returncode == 0 and "--dataset" in m.stdout


def test_config_file_with_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "spirals"\nepochs = 2\nhidden = "16,16"\n[optim]\nlr = 0.01\n')
    out = tmp_path / "r"
    r = run(["--config", str(cfg), "--epochs", "3", "--out", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["epochs"] == {"value": 3, "source": "flag"}
    assert settings["hidden"] == {"value": "16,16", "source": "config file"}
    assert settings["lr"] == {"value": 0.01, "source": "config file"}


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
    r = run([*args, "--quiet", "--epochs", "1"], tmp_path)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    assert not (out / "model.npz").exists()
    assert no_partial_files(tmp_path)


def test_batch_larger_than_data_warns_and_trains_full_batch(tmp_path):
    r = run(["--batch-size", "100000", "--epochs", "2", "--quiet", "--out",
             str(tmp_path / "r")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "full-batch" in r.stderr and "Traceback" not in r.stderr


def test_resume_with_a_different_architecture_is_refused(tmp_path):
    out = tmp_path / "r"
    assert run(["--epochs", "1", "--quiet", "--out", str(out)], tmp_path).returncode == 0
    r = run(["--resume", str(out), "--hidden", "32", "--epochs", "2", "--quiet"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "layer" in r.stderr
    other = run(["--resume", str(out), "--dataset", "spirals", "--epochs", "2", "--quiet"],
                tmp_path)
    assert other.returncode == 2 and "Traceback" not in other.stderr


def test_corrupted_checkpoint_is_refused(tmp_path):
    out = tmp_path / "r"
    assert run(["--epochs", "1", "--quiet", "--out", str(out)], tmp_path).returncode == 0
    ckpt = out / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    r = run(["--resume", str(out), "--epochs", "2", "--quiet"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corrupted" in r.stderr or "truncated" in r.stderr


SPIRALS = ["--dataset", "spirals", "--epochs", "300", "--seed", "1", "--dropout", "0.1",
           "--quiet"]


def _weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def _wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_checkpoints_and_resume_is_bitwise_equal(tmp_path):
    full = tmp_path / "full"
    assert run([*SPIRALS, "--out", str(full)], tmp_path).returncode == 0
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, TRAIN, *SPIRALS, "--out", str(part)], cwd=tmp_path,
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
    a, b = _weights(full / "model.npz"), _weights(part / "model.npz")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, TRAIN, "--dataset", "spirals", "--epochs", "50",
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
    r = run(["--resume", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "model.npz").exists()
