"""The commands beside training: ``nnx predict``, ``evaluate``, ``summary`` and ``export`` on
a saved model and raw data, their bad input (one line, exit 2), and ``fit(verbose=)``.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx import cli
from nnx.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                  "nine"])


def nnx_cmd(*args, cwd, code=None):
    """Run ``python -m nnx ARGS`` and return it; with ``code``, check the exit status."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "nnx", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    if code is not None:
        assert r.returncode == code, r.stderr
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A classifier of named digits (uint8 images, --standardize) and a regressor of a
    whole-number target around 50 (--task regression --standardize), with their data."""
    d = tmp_path_factory.mktemp("runs")
    x, y = nnx.data.digits.read_digits()
    images = np.round(x.reshape(-1, 8, 8) * 255).astype(np.uint8)
    np.savez(d / "digits.npz", x=images[:1400], y=NAMES[y[:1400]], x_test=images[1400:],
             y_test=NAMES[y[1400:]])
    rng = np.random.default_rng(5)
    xr = rng.normal(size=(400, 3)) * [1.0, 30.0, 0.2]
    yr = np.round(50 + 6 * xr[:, 0] + 0.2 * xr[:, 1] - 10 * xr[:, 2])
    np.savez(d / "prices.npz", x=xr[:320], y=yr[:320], x_test=xr[320:], y_test=yr[320:])
    for name, extra in (("digits", ["--epochs", "8"]),
                        ("prices", ["--task", "regression", "--epochs", "25"])):
        code = cli.main(["--dataset", str(d / f"{name}.npz"), "--standardize", "--lr", "0.01",
                         "--hidden", "32", "--quiet", "--out", str(d / name), *extra])
        assert code == 0
    return d


def _table(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_gives_names_and_probabilities(work):
    r = nnx_cmd("predict", work / "digits" / "model.npz", work / "digits.npz", cwd=work, code=0)
    rows = _table(r.stdout)
    assert len(rows) == 397 and list(rows[0]) == ["prediction", *(f"p_{n}" for n in
                                                                  sorted(NAMES))]
    assert "predicted 397 examples (the test set of" in r.stderr
    model = nnx.load(work / "digits" / "model.npz")
    with np.load(work / "digits.npz") as z:
        expected = model.predict(z["x_test"])
        proba = model.predict_proba(z["x_test"])
    assert [row["prediction"] for row in rows] == expected.tolist()
    got = np.array([[float(row[f"p_{n}"]) for n in sorted(NAMES)] for row in rows])
    np.testing.assert_allclose(got, proba, rtol=1e-6, atol=1e-9)
    # to a file, and the training rows when asked
    nnx_cmd("predict", work / "digits" / "model.npz", work / "digits.npz", "--split", "train",
            "-o", work / "train.csv", cwd=work, code=0)
    assert len(_table((work / "train.csv").read_text())) == 1400


def test_predict_regression_in_the_targets_units(work):
    r = nnx_cmd("predict", work / "prices" / "model.npz", work / "prices.npz", cwd=work, code=0)
    values = np.array([float(row["prediction"]) for row in _table(r.stdout)])
    with np.load(work / "prices.npz") as z:
        truth = z["y_test"]
    assert values.shape == (80,) and abs(values.mean() - truth.mean()) < 5  # about 50, not 0


def test_evaluate_prints_accuracy_and_a_confusion_matrix(work):
    r = nnx_cmd("evaluate", work / "digits" / "model.npz", work / "digits.npz", cwd=work, code=0)
    lines = r.stdout.splitlines()
    model = nnx.load(work / "digits" / "model.npz")
    with np.load(work / "digits.npz") as z:
        scores = model.evaluate(z["x_test"], z["y_test"])
        matrix = model.confusion_matrix(z["x_test"], z["y_test"])
    assert f"accuracy {scores['accuracy']:.4f}" in lines[1] and f"loss {scores['loss']:.4f}"
    assert lines[2].startswith("confusion matrix (rows: true class")
    assert lines[3].split() == sorted(NAMES)
    first = lines[4].split()
    assert first[0] == "eight" and [int(v) for v in first[1:]] == matrix[0].tolist()
    assert matrix.sum() == 397


def test_evaluate_regression_prints_mae_and_r2(work):
    r = nnx_cmd("evaluate", work / "prices" / "model.npz", work / "prices.npz", cwd=work, code=0)
    model = nnx.load(work / "prices" / "model.npz")
    with np.load(work / "prices.npz") as z:
        scores = model.evaluate(z["x_test"], z["y_test"])
    assert f"mae {scores['mae']:.4g}" in r.stdout and f"r2 {scores['r2']:.4f}" in r.stdout
    assert "standardised target" in r.stdout and scores["r2"] > 0.8


def test_summary_lists_layers_and_preprocessing(work):
    r = nnx_cmd("summary", work / "digits" / "model.npz", cwd=work, code=0)
    for words in ("dense_0 (Dense)", "(None, 32)", "Total params: 2,410",
                  "input: 8x8 images", "uint8 pixels / 255", "features standardised",
                  "10 classes: eight, five"):
        assert words in r.stdout, words


def test_export_onnx_and_safetensors(work):
    ort = pytest.importorskip("onnxruntime")
    model_path = work / "digits" / "model.npz"
    nnx_cmd("export", model_path, "--format", "onnx", "-o", work / "m.onnx", "--head",
            "softmax", cwd=work, code=0)
    model = nnx.load(model_path)
    with np.load(work / "digits.npz") as z:
        raw = z["x_test"]
    session = ort.InferenceSession(str(work / "m.onnx"))
    meta = session.get_modelmeta().custom_metadata_map
    prep = nnx.data.Preprocessing.from_json(__import__("json").loads(meta["nnx.preprocessing"]))
    x = prep.transform_x(raw, (64,))
    got = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict_proba(raw), atol=1e-5)
    pytest.importorskip("safetensors")
    r = nnx_cmd("export", model_path, "--format", "safetensors", "-o", work / "m.safetensors",
                cwd=work, code=0)
    assert "preprocessing" in r.stderr
    back = nnx.load(work / "m.safetensors")
    np.testing.assert_array_equal(back.predict(raw), model.predict(raw))


def _bad_inputs(work: Path) -> list:
    rng = np.random.default_rng(0)
    np.savez(work / "63.npz", x=rng.normal(size=(4, 63)), y=np.array(["one"] * 4))
    np.savez(work / "9x9.npz", x=np.zeros((4, 9, 9), np.uint8), y=np.array(["one"] * 4))
    np.savez(work / "dragons.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array(["one", "dragon"]))
    np.savez(work / "words.npz", x=np.zeros((2, 3)), y=np.array(["cheap", "dear"]))
    np.savez(work / "halves.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0.5, 1.5]))
    np.save(work / "nolabels.npy", np.zeros((3, 64)))
    (work / "empty.h5").write_bytes(b"")
    digits, prices = work / "digits" / "model.npz", work / "prices" / "model.npz"
    return [
        ("features", ["predict", digits, work / "63.npz"], ["63 features", "8x8 images"]),
        ("image-shape", ["predict", digits, work / "9x9.npz"], ["9x9 images", "8x8 images"]),
        ("unknown-class", ["evaluate", digits, work / "dragons.npz"],
         ["'dragon'", "not one of the model's classes", "classifier of 10"]),
        ("text-for-regression", ["evaluate", prices, work / "words.npz"],
         ["holds text", "regression model"]),
        ("targets-for-classifier", ["evaluate", digits, work / "halves.npz"],
         ["not a whole number", "classifier of 10"]),
        ("swapped", ["predict", work / "digits.npz", digits], ["not an nnx model",
                                                             "MODEL then DATA"]),
        ("dataset-as-model", ["predict", "digits", digits], ["is a dataset", "MODEL then DATA"]),
        ("no-model", ["summary", work / "nothing.npz"], ["no model or checkpoint"]),
        ("no-data", ["predict", digits, work / "nothing.csv"], ["does not exist"]),
        ("no-labels", ["evaluate", digits, work / "nolabels.npy"], ["has no labels"]),
        ("no-test-set", ["predict", digits, work / "nolabels.npy", "--split", "test"],
         ["no test set", "--split train"]),
        ("bad-hdf5", ["predict", digits, work / "empty.h5"], ["empty.h5"]),
        ("bad-format", ["export", digits, "--format", "pmml", "-o", work / "m.pmml"],
         ["invalid choice", "pmml"]),
        ("no-argument", ["evaluate", digits], ["required", "DATA"]),
    ]


@pytest.mark.parametrize("index", range(14), ids=lambda i: f"case{i}")
def test_bad_input_is_one_line_and_exit_2(work, index):
    name, args, words = _bad_inputs(work)[index]
    r = nnx_cmd(*args, cwd=work, code=2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
    assert all(w in lines[0] for w in words), (name, lines[0])


def test_a_missing_extra_names_it(work):
    code = ("import sys; sys.modules['onnx'] = None; from nnx.cli import main; "
            f"sys.exit(main(['export', {str(work / 'digits' / 'model.npz')!r}, '--format', "
            f"'onnx', '-o', {str(work / 'x.onnx')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "pip install 'nnx-trainer[onnx]'" in r.stderr and not (work / "x.onnx").exists()


def test_bare_nnx_still_trains(tmp_path):
    r = nnx_cmd("--dataset", "moons", "--epochs", "1", "--hidden", "4", "--quiet", "--out",
                tmp_path / "run", cwd=tmp_path, code=0)
    assert (tmp_path / "run" / "model.npz").exists() and r.stdout == ""


def test_fit_verbose_draws_the_progress_bar(capsys):
    ds = nnx.data.load("moons")
    trainer = nnx.Trainer(nnx.mlp([2, 8, 2]))
    trainer.fit(ds.x_train, ds.y_train, epochs=2)
    assert capsys.readouterr().err == ""  # silent by default, as before
    trainer.fit(ds.x_train, ds.y_train, epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "epoch 1/2 [" in err and "epoch 2/2 [" in err and "loss" in err
    trainer.fit(ds.x_train, ds.y_train, epochs=3, verbose=2)
    assert capsys.readouterr().err.count("\n") == 3
    with pytest.raises(ConfigError, match="verbose must be 0"):
        trainer.fit(ds.x_train, ds.y_train, epochs=1, verbose="yes")
