"""The callbacks that report: the progress bar (one line per epoch in a log, redrawn in
place on a terminal) and the CSV and JSON-lines metrics files, appended on resume.

That the progress bar reads the device only when it redraws is in test_syncs.py.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from small_trainers import Script, mlp_trainer

import nnx
from nnx.errors import ConfigError
from nnx.train import CSVLogger, JSONLinesLogger, ModelCheckpoint, ProgressBar


@pytest.fixture(scope="module")
def data():
    return nnx.data.blobs(n=120, classes=3, seed=0)


# --- progress ---------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_one_line_per_epoch_in_a_log(data):
    out = io.StringIO()
    mlp_trainer().fit(data.x_train, data.y_train, epochs=2, batch_size=32, validation_split=0.25,
                   callbacks=[ProgressBar(stream=out)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("epoch 1/2 [") and " 3/3 " in lines[0]
    assert "samples/s" in lines[0] and "val_accuracy" in lines[1]


def test_progress_bar_redraws_in_place_on_a_terminal(data):
    out = Tty()
    mlp_trainer().fit(data.x_train, data.y_train, epochs=2, batch_size=8,
                   callbacks=[ProgressBar(stream=out, every=4)])
    text = out.getvalue()
    assert text.count("\n") == 2 and text.count("\r") == 2 * (1 + 12 // 4)
    assert "4/12" in text and "loss " in text


def test_progress_bar_quiet_and_refresh_by_time(data):
    out = Tty()
    mlp_trainer().fit(data.x_train, data.y_train, epochs=1, batch_size=8,
                   callbacks=[ProgressBar(stream=out, quiet=True)])
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    out = Tty()
    mlp_trainer().fit(data.x_train, data.y_train, epochs=1, batch_size=8,
                   callbacks=[ProgressBar(stream=out, refresh=0.0)])
    assert out.getvalue().count("\r") == 1 + 12  # every step redraws when refresh is 0
    with pytest.raises(ConfigError, match="every"):
        ProgressBar(every=0)


# --- loggers ----------------------------------------------------------------------------------


def test_csv_and_json_lines_loggers(data, tmp_path):
    csv_path, jsonl_path = tmp_path / "metrics.csv", tmp_path / "metrics.jsonl"
    tr = mlp_trainer()
    h = tr.fit(data.x_train, data.y_train, epochs=3, batch_size=32, validation_split=0.2,
               callbacks=[CSVLogger(csv_path), JSONLinesLogger(jsonl_path)])
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == h["val_loss"]  # written exactly
    records = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert [r["loss"] for r in records] == h["loss"]
    assert set(records[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr",
                               "time"}
    # a new run starts new files
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=32,
           callbacks=[CSVLogger(csv_path), JSONLinesLogger(jsonl_path)])
    assert len(csv_path.read_text().splitlines()) == 2
    assert len(jsonl_path.read_text().splitlines()) == 1


def test_loggers_append_on_resume_without_repeating_epochs(data, tmp_path):
    csv_path, jsonl_path, ck = (tmp_path / "m.csv", tmp_path / "m.jsonl", tmp_path / "c.npz")

    def loggers(append):
        return [CSVLogger(csv_path, append=append), JSONLinesLogger(jsonl_path, append=append)]

    # the first run checkpoints only at its best epoch (2), then goes on to epoch 4
    mlp_trainer().fit(data.x_train, data.y_train, epochs=4, batch_size=32, validation_split=0.2,
                   callbacks=[Script("val_loss", [3, 2, 5, 5]), *loggers(False),
                              ModelCheckpoint(ck, save_best_only=True)])
    assert len(jsonl_path.read_text().splitlines()) == 4
    mlp_trainer().fit(data.x_train, data.y_train, epochs=5, batch_size=32, validation_split=0.2,
                   callbacks=loggers(True), resume=ck)
    assert [int(r["epoch"]) for r in csv.DictReader(csv_path.open())] == [1, 2, 3, 4, 5]
    assert [json.loads(x)["epoch"] for x in jsonl_path.read_text().splitlines()] == [1, 2, 3,
                                                                                      4, 5]
