"""A model file carries its preprocessing: pixel scaling, the Standardizer, class names, the
image shape and the task, so that ``nnx.load(path).predict(raw_x)`` answers as the run did.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import nnx
from nnx import cli
from nnx.data import Preprocessing, Standardizer
from nnx.errors import CheckpointError, ConfigError, DataError
from nnx.trained import TrainedModel

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _run(tmp_path, *flags) -> tuple:
    out = tmp_path / "run"
    code = cli.main(["--epochs", "4", "--hidden", "32", "--quiet", "--out", str(out), *flags])
    assert code == 0
    return out, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """The digits as uint8 images (n, 8, 8) with their names as labels, test set stored."""
    x, y = nnx.data.digits.read_digits()
    images = np.round(x.reshape(-1, 8, 8) * 255).astype(np.uint8)
    names = np.asarray(NAMES)[y]
    path = tmp_path_factory.mktemp("images") / "digits.npz"
    np.savez(path, x=images[:1400], y=names[:1400], x_test=images[1400:], y_test=names[1400:])
    return path, images[1400:], names[1400:]


def test_standardize_run_answers_again_from_the_file(tmp_path, digit_images):
    path, raw_x, raw_y = digit_images
    out, summary = _run(tmp_path, "--dataset", str(path), "--standardize", "--epochs", "10",
                        "--lr", "0.01")
    model = nnx.load(out / "model.npz")
    assert isinstance(model, TrainedModel) and isinstance(model, nnx.Sequential)
    labels = model.predict(raw_x)  # uint8 images, as stored: nothing done by hand
    assert labels.dtype.kind == "U" and set(labels) <= set(NAMES)
    accuracy = float(np.mean(labels == raw_y))
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-12)
    assert model.evaluate(raw_x, raw_y)["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    # the same network by hand: /255, the run's Standardizer, then forward
    ds = nnx.data.load(str(path))
    scaled = Standardizer().fit(ds.x_train).transform(raw_x.reshape(len(raw_x), -1) / 255.0)
    by_hand = nnx.Trainer(model).predict(scaled)
    np.testing.assert_array_equal(np.sort(NAMES)[by_hand], labels)
    assert accuracy > 0.85
    # without the preprocessing the same weights answer otherwise: the test can fail
    unscaled = nnx.Trainer(model).predict(raw_x.reshape(len(raw_x), -1) / 255.0)
    assert np.mean(np.sort(NAMES)[unscaled] != labels) > 0.1
    proba = model.predict_proba(raw_x)
    assert proba.shape == (len(raw_x), 10) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.class_names == sorted(NAMES)
    # the checkpoint carries it too
    ckpt = nnx.load(out / "checkpoint.npz")
    np.testing.assert_array_equal(ckpt.predict(raw_x), labels)


def test_standardize_scales_a_regression_target_and_inverts_it(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 4)) * [1.0, 20.0, 0.1, 5.0] + [0.0, 100.0, 3.0, -7.0]
    z = (x - [0.0, 100.0, 3.0, -7.0]) / [1.0, 20.0, 0.1, 5.0]
    y = np.round(50 + 8 * z @ [1.0, -0.5, 0.7, 0.3])  # whole numbers around 50
    path = tmp_path / "prices.npz"
    np.savez(path, x=x[:400], y=y[:400], x_test=x[400:], y_test=y[400:])
    out, summary = _run(tmp_path, "--dataset", str(path), "--task", "regression",
                        "--standardize", "--epochs", "30", "--lr", "0.01")
    model = nnx.load(out / "model.npz")
    assert model.task == "regression" and model.preprocessing.y_scaler is not None
    pred = model.predict(x[400:])
    assert pred.shape == (100, 1)
    mae = float(np.mean(np.abs(pred[:, 0] - y[400:])))
    assert mae == pytest.approx(summary["test_mae"], rel=1e-5)  # in the target's own units
    scores = model.evaluate(x[400:], y[400:])
    assert scores["mae"] == pytest.approx(mae, rel=1e-5) and scores["r2"] > 0.9
    # by hand: standardise x, run the network, undo the target's scaling
    train = nnx.data.load(str(path), task="regression")
    xs = Standardizer().fit(train.x_train).transform(x[400:])
    ys = Standardizer().fit(train.y_train)
    np.testing.assert_allclose(ys.inverse_transform(nnx.Trainer(model, loss="mse").predict(xs)),
                               pred, rtol=1e-5, atol=1e-4)


def test_a_saved_model_keeps_its_preprocessing_through_save_and_load(tmp_path):
    ds = nnx.data.load("blobs", seed=1)
    prep = dataclasses.replace(Preprocessing.for_dataset(ds, loss="cross_entropy",
                                                         standardize=True),
                               class_names=["a", "b", "c", "d"])
    model = nnx.mlp([ds.n_features, 8, ds.n_classes]).init("cpu", 0)
    nnx.save(model, tmp_path / "m.npz", preprocessing=prep)
    loaded = nnx.load(tmp_path / "m.npz")
    assert loaded.preprocessing.class_names == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(loaded.preprocessing.x_scaler.mean, prep.x_scaler.mean)
    nnx.save(loaded, tmp_path / "again.npz")  # a loaded model saves its own
    again = nnx.load(tmp_path / "again.npz", device="strict")
    np.testing.assert_array_equal(again.predict(ds.x_test), loaded.predict(ds.x_test))
    # still a Sequential where one was used: it trains, and keeps its preprocessing
    trainer = nnx.Trainer(again, lr=0.01)
    trainer.fit(ds.x_train, ds.y_train, epochs=1)
    assert trainer.model is again and again.preprocessing.class_names == ["a", "b", "c", "d"]


def test_a_file_without_preprocessing_still_loads_and_says_what_it_lacks(tmp_path):
    model = nnx.mlp([3, 4, 2]).init("cpu", 0)
    nnx.save(model, tmp_path / "plain.npz")
    loaded = nnx.load(tmp_path / "plain.npz")
    x = np.ones((5, 3), np.float32)
    assert loaded.task is None and loaded.predict(x).shape == (5, 2)  # the outputs
    with pytest.raises(ConfigError, match="records no task"):
        loaded.evaluate(x, np.zeros(5))
    with pytest.raises(ConfigError, match="needs a classifier"):
        loaded.predict_proba(x)


def test_records_round_trip_and_damage_is_named(tmp_path):
    prep = Preprocessing(task="regression", loss="mse", input_shape=(4, 4), pixel_scale=255.0,
                         x_scaler=Standardizer(np.arange(16.0), np.ones(16)),
                         y_scaler=Standardizer([50.0], [8.0]), trained_on={"seed": 3})
    for back in (Preprocessing.from_meta(*prep.to_meta()),
                 Preprocessing.from_json(json.loads(json.dumps(prep.to_json())))):
        assert back.input_shape == (4, 4) and back.pixel_scale == 255.0
        np.testing.assert_array_equal(back.y_scaler.std, [8.0])
        np.testing.assert_array_equal(back.x_scaler.mean, np.arange(16.0))
    model = nnx.mlp([16, 1]).init("cpu", 0)
    nnx.save(model, tmp_path / "m.npz", preprocessing=prep)
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["preprocessing"]["task"] = "astrology"
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match="preprocessing"):
        nnx.load(tmp_path / "bad.npz")


def test_raw_inputs_are_checked_against_the_shape_trained_on():
    prep = Preprocessing(task="classification", input_shape=(8, 8), pixel_scale=255.0,
                         n_classes=3, class_names=["a", "b", "c"])
    images = np.full((2, 8, 8), 255, np.uint8)
    np.testing.assert_array_equal(prep.transform_x(images, (64,)), np.ones((2, 64)))
    assert prep.transform_x(images[..., None], (64,)).shape == (2, 64)  # (h, w, 1) too
    assert prep.transform_x(np.ones((2, 64)), (64,)).shape == (2, 64)  # flat rows
    with pytest.raises(DataError, match=r"63 features per example .* 8x8 images \(64"):
        prep.transform_x(np.ones((2, 63)), (64,))
    with pytest.raises(DataError, match="9x9 images"):
        prep.transform_x(np.ones((2, 9, 9)), (64,))
    with pytest.warns(UserWarning, match="trained on uint8 pixels"):
        prep.transform_x(np.full((1, 64), 200.0), (64,))
    with pytest.raises(DataError, match="NaN"):
        prep.transform_x(np.full((1, 64), np.nan), (64,))


def test_labels_are_checked_against_the_model_classes():
    prep = Preprocessing(task="classification", n_classes=3, class_names=["ant", "bee", "cat"])
    np.testing.assert_array_equal(prep.encode_y(np.array(["cat", " ant", "bee"])), [2, 0, 1])
    np.testing.assert_array_equal(prep.encode_y([2, 0]), [2, 0])  # indices work too
    with pytest.raises(DataError, match=r"'dog' in row 1 is not one of .*\(ant, bee, cat\)"):
        prep.encode_y(np.array(["ant", "dog"]))
    with pytest.raises(DataError, match="out of range for 3 classes.*classifier of 3"):
        prep.encode_y([0, 5])
    with pytest.raises(DataError, match="not a whole number.*classifier"):
        prep.encode_y([0.5, 1.0])
    reg = Preprocessing(task="regression", y_scaler=Standardizer([50.0], [10.0]))
    np.testing.assert_allclose(reg.encode_y([60.0, 40.0]), [[1.0], [-1.0]])
    np.testing.assert_allclose(reg.inverse_y([[1.0], [-1.0]]), [[60.0], [40.0]])
    with pytest.raises(DataError, match="holds text.*regression model"):
        reg.encode_y(np.array(["cheap", "dear"]))
    with pytest.raises(DataError, match="2 target column.*predicts 1"):
        reg.encode_y(np.ones((2, 2)))


def test_model_summary_lists_layers_shapes_counts_and_preprocessing(tmp_path):
    lines = []
    nnx.mlp([64, 32, 10], batchnorm=True).summary(print_fn=lines.append)  # not initialised
    text = "\n".join(lines)
    assert "dense_0 (Dense)" in text and "(None, 32)" in text and "(None, 10)" in text
    assert "Total params: 2,442" in text  # 64*32 (no bias before BatchNorm) + 2*32 + 32*10 + 10
    assert "Buffers (running statistics, not trained): 64" in text
    image = []
    nnx.cnn((8, 8, 1), 10).init("cpu", 0).summary(print_fn=image.append)
    assert any("(None, 4, 4, 64)" in line for line in image)
    prep = Preprocessing(task="classification", input_shape=(8, 8), n_classes=10,
                         x_scaler=Standardizer(np.zeros(64), np.ones(64)))
    nnx.save(nnx.mlp([64, 10]).init("cpu", 0), tmp_path / "m.npz", preprocessing=prep)
    described = []
    nnx.load(tmp_path / "m.npz").summary(print_fn=described.append)
    assert "Preprocessing:" in described and any("standardised" in s for s in described)
    assert any("8x8 images" in s for s in described)
