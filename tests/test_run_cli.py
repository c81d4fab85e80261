"""The train command end to end: ``scripts/train.py`` and ``python -m nnx`` as subprocesses.

Each run works in a temporary directory and writes its run directory under
``tmp_path``; the files are checked by reading them back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx import settings as cfg

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "curves.png", "model.npz",
             "checkpoint.npz", "summary.json")


def train(args, cwd, *, module=False, timeout=180):
    head = [sys.executable, "-m", "nnx"] if module else [sys.executable, SCRIPT]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*head, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def _csv_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().strip().splitlines()]


def test_default_digits_run_directory(tmp_path):
    out = tmp_path / "run"
    r = _ok(train(["--epochs", "3", "--out", str(out)], tmp_path))
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


def test_spirals_and_full_batch(tmp_path):
    out = tmp_path / "s"
    _ok(train(["--dataset", "spirals", "--epochs", "4", "--batch-size", "full", "--quiet",
               "--out", str(out)], tmp_path))
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["batch_size"] == {"value": "full", "source": "flag"}
    assert settings["hidden"] == {"value": "64,64", "source": "dataset"}
    ckpt = nnx.checkpoint.load_checkpoint(out / "checkpoint.npz")
    assert ckpt["meta"]["step"] == 4  # one step per epoch
    assert nnx.checkpoint.load(out / "model.npz").n_in == 2


def test_regression_reports_mae(tmp_path):
    out = tmp_path / "r"
    r = _ok(train(["--dataset", "regression", "--epochs", "2", "--out", str(out)], tmp_path))
    assert "test mae" in r.stderr
    assert _csv_rows(out / "metrics.csv")[0][:4] == ["epoch", "loss", "mae", "mse"]
    summary = json.loads((out / "summary.json").read_text())
    assert "test_mae" in summary and "test_accuracy" not in summary


def test_cosine_schedule_with_warmup(tmp_path):
    out = tmp_path / "c"
    _ok(train(["--dataset", "xor", "--epochs", "3", "--schedule", "cosine", "--warmup", "5",
               "--lr", "0.02", "--quiet", "--out", str(out)], tmp_path))
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == 3 and all(0 <= lr <= 0.02 for lr in lrs)
    assert lrs[0] > lrs[1] > lrs[2]  # past warm-up the cosine decays
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["schedule"]["value"] == "cosine" and settings["warmup"]["value"] == 5


def test_config_file_with_a_flag_overriding_it(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "run.toml").write_text('dataset = "moons"\nepochs = 2\nlr = 0.05\n'
                                   'hidden = "8"\nout = "runs/m"\n')
    _ok(train(["--config", str(conf / "run.toml"), "--epochs", "3", "--quiet"], tmp_path))
    out = conf / "runs" / "m"  # relative to the config file's directory
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["epochs"] == {"value": 3, "source": "flag"}
    assert settings["lr"] == {"value": 0.05, "source": "config file"}
    assert settings["hidden"] == {"value": "8", "source": "config file"}
    assert len(_csv_rows(out / "metrics.csv")) == 4
    assert nnx.checkpoint.load(out / "model.npz").layers[0].n_out == 8


@pytest.mark.parametrize("module", [False, True], ids=["script", "module"])
def test_help_lists_every_flag_with_its_default(tmp_path, module):
    r = _ok(train(["--help"], tmp_path, module=module))
    text = " ".join(r.stdout.split())
    for s in cfg.SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        assert flag in text, flag
        assert f"(default: {s.default})" in text, s.name
    for flag in ("--resume", "--config", "--quiet", "--debug"):
        assert flag in text


def test_doctor_writes_its_report(tmp_path):
    out = tmp_path / "d"
    _ok(train(["--dataset", "blobs", "--epochs", "2", "--doctor", "--quiet", "--out",
               str(out)], tmp_path))
    try:
        import nnx.doctor  # noqa: F401
    except ImportError:
        return
    assert (out / "doctor.md").read_text().strip()
    report = json.loads((out / "doctor.json").read_text())
    assert isinstance(report, dict) and report


def test_save_load_round_trip_numpy_strict_torch(tmp_path):
    ds = nnx.data.blobs(n=120, features=3, seed=0)
    tr = nnx.Trainer(nnx.mlp([3, 16, 4], dropout=0.1, batchnorm=True), lr=0.01, seed=0)
    tr.fit(ds.x_train, ds.y_train, epochs=2, batch_size=16)
    ref = tr.predict_proba(ds.x_test)
    nnx.checkpoint.save(tr.model, tmp_path / "numpy.npz")
    path = tmp_path / "numpy.npz"
    for device in ("strict:device1", "torch"):
        try:
            backends.get(device)
        except backends.BackendUnavailable as exc:
            pytest.skip(str(exc))
        model = nnx.checkpoint.load(path, device=device)
        assert model.backend.label == device
        got = nnx.Trainer(model, device=device).predict_proba(ds.x_test)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=device)
        path = tmp_path / f"{device.replace(':', '-')}.npz"
        nnx.checkpoint.save(model, path)  # saved from this backend, loaded on the next
    final = nnx.checkpoint.load(path, device="numpy")
    for k, v in tr.model.get_weights().items():
        np.testing.assert_array_equal(final.get_weights()[k], v)
