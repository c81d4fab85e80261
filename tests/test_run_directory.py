"""A run's directory: the files a run writes (config.json, metrics.csv and .jsonl,
curves.png, model, checkpoint, summary.json, the doctor's report), how the directory
is named, and that a run which fails before writing leaves no directory behind.

Every case but one runs the train command in a subprocess (tests/train_command.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_command import ok, train

import nnx
from nnx import build
from nnx import settings as cfg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "curves.png", "model.npz",
             "checkpoint.npz", "summary.json")


def _csv_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().strip().splitlines()]


# --- the files of a run -----------------------------------------------------------------------


def test_default_digits_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    r = train(["--epochs", "3", "--out", str(out)], tmp_path)
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


def test_default_digits_run_directory(tmp_path):
    out = tmp_path / "run"
    r = ok(train(["--epochs", "3", "--out", str(out)], tmp_path))
    assert "epoch 3/3" in r.stderr and "test accuracy" in r.stderr
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if ".tmp" in p.name or ".part" in p.name]

    doc = json.loads((out / "config.json").read_text())
    settings = doc["settings"]
    assert set(settings) == set(cfg.BY_NAME)
    assert all(set(v) == {"value", "source"} for v in settings.values())
    assert settings["epochs"] == {"value": 3, "source": "flag"}
    assert settings["dataset"] == {"value": "digits", "source": "default"}
    assert settings["batch_size"] == {"value": 64, "source": "dataset"}
    assert "numpy" in doc["backend"] or "NumPy" in doc["backend"]

    rows = _csv_rows(out / "metrics.csv")
    assert rows[0][:3] == ["epoch", "loss", "accuracy"] and "val_loss" in rows[0]
    assert len(rows) == 4 and [r[0] for r in rows[1:]] == ["1", "2", "3"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in records] == [1, 2, 3]
    assert records[-1]["loss"] == pytest.approx(float(rows[-1][1]))

    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    image = matplotlib.image.imread(out / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200

    model = nnx.checkpoint.load(out / "model.npz")
    assert (model.n_in, model.n_out) == (64, 10)
    ckpt = nnx.checkpoint.load_checkpoint(out / "checkpoint.npz")
    assert ckpt["meta"]["epoch"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and 0.5 < summary["test_accuracy"] <= 1.0
    ds = nnx.data.load("digits")
    pred = nnx.Trainer(model).predict(ds.x_test)
    assert (pred == ds.y_test).mean() == pytest.approx(summary["test_accuracy"])


def test_regression_reports_mae(tmp_path):
    out = tmp_path / "r"
    r = ok(train(["--dataset", "regression", "--epochs", "2", "--out", str(out)], tmp_path))
    assert "test mae" in r.stderr
    assert _csv_rows(out / "metrics.csv")[0][:4] == ["epoch", "loss", "mae", "mse"]
    summary = json.loads((out / "summary.json").read_text())
    assert "test_mae" in summary and "test_accuracy" not in summary


def test_doctor_writes_its_report(tmp_path):
    out = tmp_path / "d"
    ok(train(["--dataset", "blobs", "--epochs", "2", "--doctor", "--quiet", "--out",
               str(out)], tmp_path))
    try:
        import nnx.doctor  # noqa: F401
    except ImportError:
        return
    assert (out / "doctor.md").read_text().strip()
    report = json.loads((out / "doctor.json").read_text())
    assert isinstance(report, dict) and report


# --- the directory's name, and none for a failed run ------------------------------------------


def test_default_run_directory_is_named_by_dataset_and_time(tmp_path):
    ok(train(["--dataset", "xor", "--epochs", "1", "--quiet"], tmp_path))
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("xor-") and len(run.name) == len("xor-20260101-120000")
    assert (run / "model.npz").is_file() and (run / "curves.png").is_file()


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build.time, "strftime", lambda fmt: "20260101-120000")
    first = build.default_out("digits")
    assert first == os.path.join("runs", "digits-20260101-120000")
    os.makedirs(first)
    second = build.default_out("digits")
    assert second == first + "-2"
    os.makedirs(second)
    assert build.default_out("digits") == first + "-3"
    assert build.default_out("/data/my.set.npz").startswith(os.path.join("runs", "my.set-"))


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path):
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "new" / "sub", tmp_path / "kept" / "sub"):
        r = train(["--dataset", str(tmp_path / "missing.npz"), "--quiet", "--out", str(out)],
                  tmp_path)
        assert r.returncode == 2 and "does not exist" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # made by the test, kept
    assert not list((tmp_path / "kept").iterdir())
