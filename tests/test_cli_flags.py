"""The command line's flags, help and config files: where each setting comes from (flag,
config file, dataset, default), switches a flag can undo, and the run a flag gives.

The runs are the train command in a subprocess (tests/train_command.py), read back from
the run directory's config.json, metrics and model; one help test calls cli.main.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_command import ROOT, ok, train, weights

import nnx
from nnx import cli
from nnx import settings as cfg


def _settings(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["settings"]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string


def _csv_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().strip().splitlines()]


# --- settings and their sources ---------------------------------------------------------------


def test_config_json_round_trips_to_the_same_run(tmp_path):
    """Every final value in config.json, written back as a TOML file, reproduces the run."""
    first = tmp_path / "first"
    ok(train(["--dataset", "moons", "--epochs", "3", "--hidden", "12,6", "--lr", "0.02",
               "--dropout", "0.1", "--schedule", "cosine", "--warmup", "4", "--batch-size", "16",
               "--optimizer", "adamw", "--weight-decay", "0.001", "--clip-norm", "5",
               "--quiet", "--out", str(first)], tmp_path))
    settings = _settings(first)
    assert set(settings) == set(cfg.BY_NAME)
    assert settings["lr"] == {"value": 0.02, "source": "flag"}
    assert settings["momentum"] == {"value": None, "source": "default"}
    lines = [f"{k} = {_toml_value(v['value'])}" for k, v in settings.items()
             if v["value"] is not None and k != "out"]
    (tmp_path / "again.toml").write_text("\n".join(lines) + "\n")
    second = tmp_path / "second"
    ok(train(["--config", str(tmp_path / "again.toml"), "--quiet", "--out", str(second)],
              tmp_path))
    again = _settings(second)
    assert {k: v["value"] for k, v in again.items() if k != "out"} == \
        {k: v["value"] for k, v in settings.items() if k != "out"}
    assert all(again[k]["source"] == "config file" for k in again
               if settings[k]["value"] is not None and k != "out")
    a, b = weights(first / "model.npz"), weights(second / "model.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_config_file_with_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "spirals"\nepochs = 2\nhidden = "16,16"\n[optim]\nlr = 0.01\n')
    out = tmp_path / "r"
    r = train(["--config", str(cfg), "--epochs", "3", "--out", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["epochs"] == {"value": 3, "source": "flag"}
    assert settings["hidden"] == {"value": "16,16", "source": "config file"}
    assert settings["lr"] == {"value": 0.01, "source": "config file"}


def test_config_file_with_a_flag_overriding_it(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "run.toml").write_text('dataset = "moons"\nepochs = 2\nlr = 0.05\n'
                                   'hidden = "8"\nout = "runs/m"\n')
    ok(train(["--config", str(conf / "run.toml"), "--epochs", "3", "--quiet"], tmp_path))
    out = conf / "runs" / "m"  # relative to the config file's directory
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["epochs"] == {"value": 3, "source": "flag"}
    assert settings["lr"] == {"value": 0.05, "source": "config file"}
    assert settings["hidden"] == {"value": "8", "source": "config file"}
    assert len(_csv_rows(out / "metrics.csv")) == 4
    assert nnx.checkpoint.load(out / "model.npz").layers[0].n_out == 8


def test_a_no_flag_undoes_a_config_file_switch(tmp_path):
    (tmp_path / "on.toml").write_text("batchnorm = true\nstandardize = true\n")
    out = tmp_path / "r"
    ok(train(["--config", str(tmp_path / "on.toml"), "--no-batchnorm", "--dataset", "blobs",
               "--epochs", "1", "--quiet", "--out", str(out)], tmp_path))
    settings = _settings(out)
    assert settings["batchnorm"] == {"value": False, "source": "flag"}
    assert settings["standardize"] == {"value": True, "source": "config file"}
    model = nnx.checkpoint.load(out / "model.npz")
    assert not [la for la in model.layers if type(la).__name__ == "BatchNorm"]


def test_an_empty_hidden_list_trains_a_linear_model(tmp_path):
    out = tmp_path / "r"
    ok(train(["--dataset", "blobs", "--hidden", "", "--epochs", "2", "--quiet", "--out",
               str(out)], tmp_path))
    model = nnx.checkpoint.load(out / "model.npz")
    assert [type(la).__name__ for la in model.layers] == ["Dense"]


# --- the runs flags give ----------------------------------------------------------------------


def test_spirals_and_full_batch(tmp_path):
    out = tmp_path / "s"
    ok(train(["--dataset", "spirals", "--epochs", "4", "--batch-size", "full", "--quiet",
               "--out", str(out)], tmp_path))
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["batch_size"] == {"value": "full", "source": "flag"}
    assert settings["hidden"] == {"value": "64,64", "source": "dataset"}
    ckpt = nnx.checkpoint.load_checkpoint(out / "checkpoint.npz")
    assert ckpt["meta"]["step"] == 4  # one step per epoch
    assert nnx.checkpoint.load(out / "model.npz").n_in == 2


def test_batch_larger_than_data_warns_and_trains_full_batch(tmp_path):
    r = train(["--batch-size", "100000", "--epochs", "2", "--quiet", "--out",
             str(tmp_path / "r")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "full-batch" in r.stderr and "Traceback" not in r.stderr


def test_cosine_schedule_with_warmup(tmp_path):
    out = tmp_path / "c"
    ok(train(["--dataset", "xor", "--epochs", "3", "--schedule", "cosine", "--warmup", "5",
               "--lr", "0.02", "--quiet", "--out", str(out)], tmp_path))
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == 3 and all(0 <= lr <= 0.02 for lr in lrs)
    assert lrs[0] > lrs[1] > lrs[2]  # past warm-up the cosine decays
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["schedule"]["value"] == "cosine" and settings["warmup"]["value"] == 5


# --- help -------------------------------------------------------------------------------------


def test_help_shows_the_defaults_of_each_dataset(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-batchnorm" in text and "--no-standardize" in text
    # the MNIST defaults are named where each flag is explained, and in full at the end
    assert "(default: 0.0) [mnist/fashion-mnist: 0.2]" in text
    assert "(default: 64) [mnist/fashion-mnist: 128;" in text
    assert "mnist: hidden=512,256, batch_size=128, epochs=20, dropout=0.2" in text
    assert "may not leave it" in text  # the config-file path rule


def test_help_lists_the_flags_and_the_device_default(tmp_path):
    r = train(["--help"], tmp_path)
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


@pytest.mark.parametrize("module", [False, True], ids=["script", "module"])
def test_help_lists_every_flag_with_its_default(tmp_path, module):
    r = ok(train(["--help"], tmp_path, module=module))
    text = " ".join(r.stdout.split())
    for s in cfg.SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        assert flag in text, flag
        assert f"(default: {s.default})" in text, s.name
    for flag in ("--resume", "--config", "--quiet", "--debug"):
        assert flag in text
