"""Every user mistake through the command line: exit 2, one line naming it, nothing half-written.

Each case builds its inputs in ``tmp_path``, runs ``scripts/train.py`` in a
subprocess and checks: the exit status, exactly one ``error:`` line on stderr
holding the key words (the other lines, if any, are ``warning:`` lines), no
traceback, no temporary or partial file anywhere under ``tmp_path``, and no
model written for the failed run.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_command import error_line

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")


def train(args, cwd, timeout=120):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _partial_files(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if ".tmp" in p.name or ".part" in p.name]


# --- input builders -----------------------------------------------------------------------


def _npz(t: Path, x, y, **more) -> list[str]:
    path = t / "data.npz"
    np.savez(path, x=x, y=y, **more)
    return ["--dataset", str(path)]


def _csv(t: Path, labels, header=True) -> list[str]:
    path = t / "data.csv"
    head = "a,b,label\n" if header else ""
    path.write_text(head + "".join(f"{i * 0.5},{i % 3},{lab}\n" for i, lab in enumerate(labels)))
    return ["--dataset", str(path)]


def _csv_text(t: Path, text: str) -> list[str]:
    (t / "data.csv").write_text(text)
    return ["--dataset", str(t / "data.csv")]


def _x(n=30, d=3, bad=None):
    x = np.random.default_rng(0).normal(size=(n, d))
    if bad is not None:
        x[4, 1] = bad
    return x


def _labels(n=30, last=None):
    y = (np.arange(n) % 3).astype(np.float64)
    if last is not None:
        y[-1] = last
    return y


def _toml(t: Path, body: str) -> list[str]:
    conf = t / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "run.toml").write_text(body)
    return ["--config", str(conf / "run.toml")]


def _idx_dir(t: Path, fault: str) -> list[str]:
    """Fashion-MNIST-named uncompressed IDX files (no published checksum) with one fault."""
    from nnx.data import write_idx

    d = t / "files"
    d.mkdir()
    images, labels = np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.uint8)
    for name, a in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                    ("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        write_idx(d / name, a)
    first = d / "train-images-idx3-ubyte"
    raw = first.read_bytes()
    if fault == "magic":
        first.write_bytes(b"<!DO" + raw[4:])
    elif fault == "truncated":
        first.write_bytes(raw[: len(raw) // 2])
    return ["--dataset", "fashion-mnist", "--data-dir", str(d)]


def _wrong_gz(t: Path) -> list[str]:
    """MNIST with a train-images .gz whose SHA-256 is not the published one."""
    d = t / "files"
    d.mkdir()
    with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"\x00" * 64)
    return ["--dataset", "mnist", "--data-dir", str(d)]


def _under_a_file(t: Path) -> list[str]:
    (t / "plain-file").write_text("x")
    return ["--out", str(t / "plain-file" / "run")]


CASES = [
    # id, builder, exit status, key words of the error line (case-insensitive)
    ("x-y-length", lambda t: _npz(t, _x(30), _labels(29)), 2, ["30 rows", "29"]),
    ("label-out-of-range-npz", lambda t: _npz(t, _x(), _labels(last=1e9)), 2,
     ["label 1000000000", "out of range"]),
    ("label-out-of-range-csv", lambda t: _csv(t, [0, 1, 2] * 9 + [5000]), 2,
     ["label 5000", "out of range"]),
    ("label-negative-npz", lambda t: _npz(t, _x(), _labels(last=-1)), 2, ["-1", "negative"]),
    ("label-negative-csv", lambda t: _csv(t, [0, 1, 2] * 9 + [-2]), 2, ["-2", "negative"]),
    ("label-fraction-npz", lambda t: _npz(t, _x(), _labels(last=1.5)) + ["--loss", "ce"], 2,
     ["e.g. 1.5", "whole numbers", "--loss mse"]),
    ("label-fraction-csv", lambda t: _csv(t, [0, 1, 2] * 9 + [0.25]) + ["--loss",
                                                                         "cross_entropy"], 2,
     ["e.g. 0.25", "whole numbers"]),
    ("nan-input", lambda t: _npz(t, _x(bad=np.nan), _labels()), 2, ["NaN", "row 4"]),
    ("inf-input", lambda t: _npz(t, _x(bad=np.inf), _labels()), 2, ["infinite", "row 4"]),
    ("nan-input-csv", lambda t: _csv_text(t, "a,b,label\n" + "1,2,0\n0,inf,1\n" * 10), 2,
     ["infinite", "row 1"]),
    ("empty", lambda t: _npz(t, np.zeros((0, 3)), np.zeros(0)), 2, ["empty"]),
    ("batch-zero", lambda t: ["--batch-size", "0"], 2, ["batch size", "positive"]),
    ("batch-negative", lambda t: ["--batch-size", "-4"], 2, ["batch size", "positive"]),
    ("batch-text", lambda t: ["--batch-size", "many"], 2, ["--batch-size", "integer"]),
    ("unknown-activation", lambda t: ["--activation", "swish2"], 2,
     ["activation", "swish2", "relu", "tanh", "sigmoid"]),
    ("unknown-optimizer", lambda t: ["--optimizer", "adagrad"], 2,
     ["optimizer", "adagrad", "sgd", "adam", "rmsprop"]),
    ("unknown-loss", lambda t: ["--loss", "hinge"], 2, ["loss", "hinge", "cross_entropy", "mse"]),
    ("unknown-init", lambda t: ["--init", "orthogonal"], 2,
     ["orthogonal", "he_normal", "xavier_uniform"]),
    ("unknown-schedule", lambda t: ["--schedule", "cyclic"], 2,
     ["schedule", "cyclic", "cosine", "step"]),
    ("lr-zero", lambda t: ["--lr", "0"], 2, ["learning rate", "0"]),
    ("lr-negative", lambda t: ["--lr", "-0.1"], 2, ["learning rate", "-0.1"]),
    ("hidden-zero", lambda t: ["--hidden", "0"], 2, ["hidden", "positive"]),
    ("hidden-text", lambda t: ["--hidden", "abc"], 2, ["hidden", "abc"]),
    ("hidden-negative", lambda t: ["--hidden", "-5"], 2, ["hidden", "-5"]),
    ("device-cuda", lambda t: ["--device", "cuda"], 2, ["cupy", "install", "--device cpu"]),
    ("device-unknown", lambda t: ["--device", "quantum"], 2,
     ["unknown device", "quantum", "cpu", "torch"]),
    ("idx-bad-magic", lambda t: _idx_dir(t, "magic"), 2, ["magic number", "0x3c21444f"]),
    ("idx-truncated", lambda t: _idx_dir(t, "truncated"), 2, ["truncated", "header promises"]),
    ("checksum-mismatch", _wrong_gz, 2, ["SHA-256", "expected", "delete it"]),
    ("unwritable-out", _under_a_file, 2, ["cannot write", "plain-file"]),
    ("data-dir-is-a-file", lambda t: ["--dataset", "mnist", "--data-dir",
                                      _under_a_file(t)[1]], 2,
     ["cannot use", "data directory", "--data-dir"]),
    ("toml-invalid", lambda t: _toml(t, "epochs = = 2\n"), 2, ["not valid TOML", "run.toml"]),
    ("toml-unknown-key", lambda t: _toml(t, "learning_rate = 0.1\n"), 2,
     ["unknown setting", "learning_rate"]),
    ("toml-wrong-type", lambda t: _toml(t, 'epochs = "ten"\n'), 2,
     ["'epochs' must be int", "ten"]),
    ("toml-escaping-path", lambda t: _toml(t, 'out = "../../outside"\n'), 2,
     ["escapes", "out"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path):
    name, build, code, words = case
    work = tmp_path / "work"
    work.mkdir()
    args = build(tmp_path)
    out = tmp_path / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    r = train([*args, "--quiet", "--epochs", "1"], work)
    assert r.returncode == code, r.stderr
    line = error_line(r, words)
    if name.startswith("idx-"):
        assert "SHA-256" not in line  # the fault itself is named, not a checksum
    assert not _partial_files(tmp_path)
    assert not list(tmp_path.rglob("model.npz"))
    assert not list(work.iterdir())  # nothing written to the working directory


def test_batch_larger_than_the_data_warns_and_trains_full_batch(tmp_path):
    out = tmp_path / "out"
    r = train(["--dataset", "xor", "--batch-size", "100000", "--epochs", "2", "--quiet",
               "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "100000" in warning[0] and "full-batch" in warning[0]
    import nnx

    assert nnx.load_checkpoint(out / "checkpoint.npz")["meta"]["step"] == 2  # 1 step/epoch


# --- resuming from a bad checkpoint ------------------------------------------------------


def _resume_fails(run: Path, extra, words, tmp_path):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = train(["--resume", str(run), "--epochs", "2", "--quiet", *extra], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    after = {p.name: p.read_bytes() for p in run.iterdir()}
    assert after == before  # nothing rewritten, nothing added
    assert not _partial_files(run)


def test_resume_with_a_wrong_feature_count_is_an_architecture_mismatch(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    _resume_fails(run, ["--dataset", "spirals"], ["different model", "n_in=64", "n_in=2"],
                  tmp_path)


def test_resume_with_other_hidden_sizes_is_refused(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    _resume_fails(run, ["--hidden", "32"], ["different model", "layer 0"], tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty", "not-npz"])
def test_resume_from_a_damaged_checkpoint(digits_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    ckpt = run / "checkpoint.npz"
    raw = bytearray(ckpt.read_bytes())
    if damage == "truncated":
        ckpt.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupted":
        mid = len(raw) // 2
        raw[mid: mid + 64] = bytes(64)
        ckpt.write_bytes(bytes(raw))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        ckpt.write_text("hello")
    _resume_fails(run, [], ["checkpoint.npz", "damaged"], tmp_path)


def test_resume_a_model_file_instead_of_a_checkpoint(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    shutil.copy(run / "model.npz", run / "checkpoint.npz")
    _resume_fails(run, [], ["saved model, not a checkpoint"], tmp_path)


def test_a_new_run_into_an_existing_run_directory_is_refused(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = train(["--epochs", "1", "--quiet", "--out", str(run)], tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "--resume" in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# --- every setting's type and range, through a config file and through flags ---------------

#: id, flags saying the bad value (None: no flag can), the same in a TOML file (None: TOML
#: cannot), key words of the error line
SETTING_CASES = [
    ("seed-negative", ["--seed", "-1"], "seed = -1", ["seed", "0 to 2**63 - 1", "-1"]),
    ("seed-huge", ["--seed", "99999999999999999999999"], "seed = 99999999999999999999999",
     ["seed", "2**63"]),
    ("seed-fraction", ["--seed", "1.5"], "seed = 1.5", ["seed", "1.5"]),
    ("seed-text", None, 'seed = "3"', ["'seed' must be int", "str"]),
    ("epochs-fraction", ["--epochs", "2.5"], "epochs = 2.5", ["epochs", "2.5"]),
    ("epochs-bool", None, "epochs = true", ["'epochs' must be int", "bool"]),
    ("epochs-negative", ["--epochs", "-3"], "epochs = -3", ["epochs", "at least 1"]),
    ("batch-text", ["--batch-size", "lots"], 'batch_size = "lots"', ["batch", "lots"]),
    ("batch-fraction", ["--batch-size", "2.5"], "batch_size = 2.5", ["batch", "2.5"]),
    ("batch-bool", None, "batch_size = true", ["'batch_size' must be", "bool"]),
    ("batch-negative", ["--batch-size", "-3"], "batch_size = -3", ["batch size", "positive"]),
    ("batch-zero-text", None, 'batch_size = "0"', ["batch size", "positive"]),
    ("warmup-negative", ["--warmup", "-1"], "warmup = -1", ["warmup", "0 or more"]),
    ("warmup-fraction", ["--warmup", "1.5"], "warmup = 1.5", ["warmup", "1.5"]),
    ("early-stopping-negative", ["--early-stopping", "-2"], "early_stopping = -2",
     ["early-stopping", "0 (off) or more"]),
    ("hidden-fraction", ["--hidden", "2.5"], "hidden = [2.5]", ["hidden sizes", "2.5"]),
    ("hidden-zero", ["--hidden", "8,0"], "hidden = [8, 0]", ["hidden sizes", "positive"]),
    ("hidden-bool", None, "hidden = [true, 4]", ["hidden sizes"]),
    ("hidden-number", None, "hidden = 64", ["'hidden' must be str or list", "64"]),
    ("hidden-beyond-memory", ["--hidden", "1000000000"], "hidden = [1000000000]",
     ["parameters", "GiB", "--hidden"]),
    ("dropout-nan", ["--dropout", "nan"], "dropout = nan", ["dropout", "finite"]),
    ("dropout-above-one", ["--dropout", "1.5"], "dropout = 1.5", ["dropout", "[0, 1)"]),
    ("dropout-negative", ["--dropout", "-0.1"], "dropout = -0.1", ["dropout", "[0, 1)"]),
    ("val-split-negative", ["--val-split", "-0.5"], "val_split = -0.5",
     ["val-split", "[0, 1)"]),
    ("lr-infinite", ["--lr", "inf"], "lr = inf", ["lr", "finite"]),
    ("lr-negative", ["--lr", "-1"], "lr = -1", ["learning rate"]),
    ("momentum-above-one", ["--optimizer", "momentum", "--momentum", "1.5"],
     'optimizer = "momentum"\nmomentum = 1.5', ["momentum", "[0, 1)"]),
    ("momentum-with-adam", ["--momentum", "0.5"], "momentum = 0.5",
     ["momentum does not apply to adam"]),
    ("weight-decay-negative", ["--weight-decay", "-1"], "weight_decay = -1",
     ["weight-decay", "0 or more"]),
    ("l2-infinite", ["--l2", "inf"], "l2 = inf", ["l2", "finite"]),
    ("clip-norm-negative", ["--clip-norm", "-1"], "clip_norm = -1", ["clip-norm", "positive"]),
    ("dtype-int", ["--dtype", "int32"], 'dtype = "int32"', ["dtype", "float32 or float64"]),
    ("standardize-text", ["--standardize=yes"], 'standardize = "yes"', ["standardize"]),
    ("doctor-number", None, "doctor = 1", ["'doctor' must be bool"]),
    ("device-number", None, "device = 5", ["'device' must be str"]),
    ("dataset-number", None, "dataset = 5", ["'dataset' must be str"]),
    ("out-bool", None, "out = false", ["'out' must be str or none"]),
    ("loss-number", None, "loss = 3", ["'loss' must be str or none"]),
    ("optimizer-list", None, 'optimizer = ["adam"]', ["'optimizer' must be str"]),
    ("schedule-unknown", ["--schedule", "cyclic"], 'schedule = "cyclic"', ["schedule", "cyclic"]),
    ("init-unknown", ["--init", "orthogonal"], 'init = "orthogonal"', ["orthogonal"]),
    ("activation-unknown", ["--activation", "swish2"], 'activation = "swish2"', ["swish2"]),
]


def _one_error_line(code, err, words, tmp_path, work):
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), err
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    assert not _partial_files(tmp_path) and not list(tmp_path.rglob("model.npz"))
    assert not list(work.iterdir())
    return errors[0]


def _main(args, tmp_path, monkeypatch, capsys):
    """``nnx`` in this process (the same path as the script, much faster for a table)."""
    from nnx import cli

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    try:
        code = cli.main([*args, "--quiet"])
    except SystemExit as exc:  # a usage error, as argparse reports it
        code = exc.code
    return code, capsys.readouterr().err, work


@pytest.mark.parametrize("case", [c for c in SETTING_CASES if c[2] is not None],
                         ids=[c[0] for c in SETTING_CASES if c[2] is not None])
def test_each_bad_setting_in_a_config_file_is_one_error_line(case, tmp_path, monkeypatch,
                                                             capsys):
    _, _, body, words = case
    code, err, work = _main(_toml(tmp_path, body + "\n"), tmp_path, monkeypatch, capsys)
    line = _one_error_line(code, err, words, tmp_path, work)
    if "must be" in line and "setting '" in line:  # a type error names the file
        assert "run.toml" in line


@pytest.mark.parametrize("case", [c for c in SETTING_CASES if c[1] is not None],
                         ids=[c[0] for c in SETTING_CASES if c[1] is not None])
def test_each_bad_setting_as_a_flag_is_one_error_line(case, tmp_path, monkeypatch, capsys):
    _, flags, _, words = case
    code, err, work = _main(flags, tmp_path, monkeypatch, capsys)
    _one_error_line(code, err, words, tmp_path, work)


def test_a_range_error_in_a_config_file_names_the_file(tmp_path, monkeypatch, capsys):
    code, err, _ = _main(_toml(tmp_path, "seed = -1\n"), tmp_path, monkeypatch, capsys)
    assert code == 2 and "run.toml: seed must be" in err


def test_a_quoted_batch_size_in_a_config_file_trains_as_that_number(tmp_path):
    out = tmp_path / "out"
    r = train([*_toml(tmp_path, 'dataset = "xor"\nbatch_size = "100"\nepochs = 1\n'),
               "--quiet", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["batch_size"] == {"value": 100, "source": "config file"}
    import nnx

    assert nnx.load_checkpoint(out / "checkpoint.npz")["meta"]["step"] == 8  # 720 / 100


def test_a_path_too_long_for_the_filesystem_is_one_error_line(tmp_path, monkeypatch, capsys):
    long = str(tmp_path / ("n" * 300))
    code, err, work = _main(["--dataset", "xor", "--out", long], tmp_path, monkeypatch, capsys)
    _one_error_line(code, err, ["cannot write", long[:40], "too long"], tmp_path, work)
    work.rmdir()
    code, err, work = _main(["--dataset", "mnist", "--data-dir", long], tmp_path, monkeypatch,
                            capsys)
    _one_error_line(code, err, ["cannot read dataset mnist", long[:40], "too long"], tmp_path,
                    work)
