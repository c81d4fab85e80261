"""Convolutional networks from the command line: --arch cnn, --layers, image data, mistakes.

The runs are the train command in a subprocess (tests/train_command.py); the memory
check and the settings rules are also called in process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_command import error_line, ok, train

import nnx
from nnx import build
from nnx import settings as settings_mod
from nnx.errors import ConfigError


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def test_digits_cnn_trains_offline_and_reports_test_accuracy(tmp_path):
    run = tmp_path / "cnn"
    r = ok(train(["--dataset", "digits", "--arch", "cnn", "--epochs", "3", "--device", "cpu",
                  "--out", str(run)], tmp_path))
    assert "test accuracy" in r.stdout + r.stderr
    assert _summary(run)["test_accuracy"] > 0.8
    model = nnx.load(run / "model.npz")
    kinds = [type(la).__name__ for la in model.layers]
    assert kinds[:3] == ["Conv2D", "ActivationLayer", "MaxPool2D"] and "Flatten" in kinds
    config = json.loads((run / "config.json").read_text())["settings"]
    assert config["arch"]["value"] == "cnn" and config["dropout"]["value"] == 0.25


def test_a_layer_string_builds_that_stack_on_npz_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((120, 10, 9, 2)).astype(np.float32)
    y = (x[:, :5].mean(axis=(1, 2, 3)) > x[:, 5:].mean(axis=(1, 2, 3))).astype(np.int64)
    np.savez(tmp_path / "images.npz", x=x, y=y)
    run = tmp_path / "run"
    ok(train(["--dataset", str(tmp_path / "images.npz"), "--layers",
              "conv:4:3,relu,maxpool:2,conv:6:3:1:valid,gap,dense:8,relu", "--epochs", "2",
              "--device", "cpu", "--quiet", "--out", str(run)], tmp_path))
    model = nnx.load(run / "model.npz")
    assert model.input_shape == (10, 9, 2) and model.layers[0].in_channels == 2
    assert [type(la).__name__ for la in model.layers][-3:] == ["Dense", "ActivationLayer",
                                                                "Dense"]


@pytest.mark.parametrize("args, words", [
    (["--arch", "cnn", "--hidden", "64"], ["--hidden", "--arch mlp"]),
    (["--arch", "cnn", "--activation", "tanh"], ["--activation", "--arch mlp"]),
    (["--layers", "conv:8:3,flatten", "--dropout", "0.3"], ["--dropout", "--layers"]),
    (["--arch", "cnn", "--layers", "flatten"], ["--arch cnn", "--layers", "not both"]),
    (["--arch", "cnn", "--dataset", "spirals"], ["--arch cnn", "images", "spirals"]),
    (["--layers", "conv:8:x"], ["conv:8:x", "whole numbers"]),
    (["--layers", "conv:8:9:1:valid,flatten"], ["9x9 window", "8x8", "shrink to zero"]),
    (["--layers", "conv:8:3,maxpool:2,maxpool:2,maxpool:2,maxpool:2,flatten"],
     ["maxpool2d_4", "1x1", "shrink to zero"]),
    (["--arch", "rnn"], ["arch", "mlp or cnn"]),
])
def test_mistakes_are_one_error_line(tmp_path, args, words):
    r = train([*args, "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r")],
              tmp_path)
    error_line(r, words)
    assert not (tmp_path / "r").exists()


def test_a_batch_whose_buffers_do_not_fit_names_the_batch_size():
    values = settings_mod.validate({"arch": "cnn", "batch_size": 60000, "dropout": 0.25})
    model = nnx.cnn((28, 28, 1), 10)
    with pytest.raises(ConfigError, match=r"--batch-size 60000 needs about [\d.]+ GiB.*"
                                          r"im2col.*conv2d_3.*use --batch-size \d+"):
        build.check_batch_fits(model, values, 60000, limit=8 * 2**30)
    build.check_batch_fits(model, {**values, "batch_size": 128}, 60000, limit=8 * 2**30)


def test_the_mlp_path_keeps_flattening_images(tmp_path):
    run = tmp_path / "mlp"
    ok(train(["--dataset", "digits", "--hidden", "32", "--epochs", "1", "--device", "cpu",
              "--quiet", "--out", str(run)], tmp_path))
    model = nnx.load(run / "model.npz")
    assert model.layers[0].n_in == 64 and model.input_shape in (None, (64,))


def test_a_cnn_run_resumes_and_refuses_another_architecture(tmp_path):
    run = tmp_path / "run"
    ok(train(["--dataset", "digits", "--arch", "cnn", "--epochs", "1", "--device", "cpu",
              "--quiet", "--out", str(run)], tmp_path))
    ok(train(["--resume", str(run), "--epochs", "2", "--quiet"], tmp_path))
    assert _summary(run)["epochs_run"] == 2
    r = train(["--resume", str(run), "--epochs", "3", "--arch", "mlp"], tmp_path)
    error_line(r, ["different model", "(8, 8, 1)"])


@pytest.mark.parametrize("image, shape", [((28, 28), (28, 28, 1)), ((8, 8), (8, 8, 1)),
                                          ((6, 5, 3), (6, 5, 3))])
def test_a_datasets_image_shape_is_the_cnns_input_shape(image, shape):
    from nnx.data import Dataset

    n = int(np.prod(shape))
    ds = Dataset(np.zeros((20, n), np.float32), np.arange(20) % 2, np.zeros((4, n), np.float32),
                 np.arange(4) % 2, "images", 2, meta={"image_shape": image})
    model, _ = build.build_model(settings_mod.validate({"arch": "cnn", "dropout": 0.25}), ds)
    assert model.input_shape == shape and model.layers[0].in_channels == shape[2]
