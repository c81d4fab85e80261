"""The command line's own behaviour: settings that round-trip through config.json, switches
a flag can undo, run directory names, what a failed run leaves behind, exit status 1 for a
bug, and the help text. The run directory file by file is checked in test_run_cli.py.
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
from nnx import build, cli
from nnx import settings as cfg

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")


def train(args, cwd, timeout=180):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def _settings(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["settings"]


def _params(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string


def test_config_json_round_trips_to_the_same_run(tmp_path):
    """Every final value in config.json, written back as a TOML file, reproduces the run."""
    first = tmp_path / "first"
    _ok(train(["--dataset", "moons", "--epochs", "3", "--hidden", "12,6", "--lr", "0.02",
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
    _ok(train(["--config", str(tmp_path / "again.toml"), "--quiet", "--out", str(second)],
              tmp_path))
    again = _settings(second)
    assert {k: v["value"] for k, v in again.items() if k != "out"} == \
        {k: v["value"] for k, v in settings.items() if k != "out"}
    assert all(again[k]["source"] == "config file" for k in again
               if settings[k]["value"] is not None and k != "out")
    a, b = _params(first / "model.npz"), _params(second / "model.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_no_flag_undoes_a_config_file_switch(tmp_path):
    (tmp_path / "on.toml").write_text("batchnorm = true\nstandardize = true\n")
    out = tmp_path / "r"
    _ok(train(["--config", str(tmp_path / "on.toml"), "--no-batchnorm", "--dataset", "blobs",
               "--epochs", "1", "--quiet", "--out", str(out)], tmp_path))
    settings = _settings(out)
    assert settings["batchnorm"] == {"value": False, "source": "flag"}
    assert settings["standardize"] == {"value": True, "source": "config file"}
    model = nnx.checkpoint.load(out / "model.npz")
    assert not [la for la in model.layers if type(la).__name__ == "BatchNorm"]


def test_an_empty_hidden_list_trains_a_linear_model(tmp_path):
    out = tmp_path / "r"
    _ok(train(["--dataset", "blobs", "--hidden", "", "--epochs", "2", "--quiet", "--out",
               str(out)], tmp_path))
    model = nnx.checkpoint.load(out / "model.npz")
    assert [type(la).__name__ for la in model.layers] == ["Dense"]


def test_default_run_directory_is_named_by_dataset_and_time(tmp_path):
    _ok(train(["--dataset", "xor", "--epochs", "1", "--quiet"], tmp_path))
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


def test_every_dataset_default_is_a_valid_setting():
    for dataset, overrides in cfg.DATASET_DEFAULTS.items():
        resolved = cfg.resolve({"dataset": dataset})
        for key, value in overrides.items():
            assert resolved[key] == {"value": value, "source": "dataset"}, (dataset, key)
