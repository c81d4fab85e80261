"""safetensors files: readable by the safetensors library (torch, numpy), loadable into nnx."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.errors import CheckpointError, ConfigError, MissingExtra

safetensors = pytest.importorskip("safetensors")

from nnx.export import load_safetensors, read_safetensors, to_safetensors  # noqa: E402


def _model(dtype="float32"):
    model = nnx.mlp([4, 6, 5, 3], activation="elu:0.5", batchnorm=True, dropout=0.2)
    trainer = nnx.Trainer(model, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(dtype)
    trainer.fit(x, rng.integers(0, 3, 64), epochs=2, batch_size=16)
    return model, x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_gives_the_same_weights_and_outputs(tmp_path, dtype):
    model, x = _model(dtype)
    path = tmp_path / "model.safetensors"
    to_safetensors(model, path)
    again = load_safetensors(path)
    assert again.config() == model.config() and again.dtype == dtype
    for key, value in model.get_weights().items():
        np.testing.assert_array_equal(again.get_weights()[key], value)
    np.testing.assert_array_equal(again(again.backend.asarray(x, dtype)),
                                  model(model.backend.asarray(x, dtype)))
    # nnx.load reads the same file
    via_load = nnx.load(path)
    np.testing.assert_array_equal(via_load.get_weights()["dense_0.w"],
                                  model.get_weights()["dense_0.w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_torch_reads_the_tensors_and_the_metadata(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    model, _ = _model()
    path = tmp_path / "model.safetensors"
    to_safetensors(model, path, metadata={"classes": ["cat", "dog", "bird"]})
    tensors = st_torch.load_file(str(path))
    weights = model.get_weights()
    assert sorted(tensors) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(tensors[key].numpy(), value)
    assert tuple(tensors["dense_0.w"].shape) == (4, 6)
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "nnx-model" and meta["dtype"] == "float32"
    assert json.loads(meta["architecture"]) == model.config()
    header, _ = read_safetensors(path)
    assert header["nnx"] == {"classes": ["cat", "dog", "bird"]}


def test_loads_onto_another_backend(tmp_path):
    model, x = _model()
    path = tmp_path / "m.safetensors"
    to_safetensors(model, path)
    try:
        other = nnx.load(path, device="strict:device1")
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    out = other.backend.to_numpy(other(other.backend.asarray(x, "float32")))
    np.testing.assert_allclose(out, model.backend.to_numpy(model(model.backend.asarray(
        x, "float32"))), rtol=1e-6, atol=1e-6)


def test_non_finite_weights_are_not_written(tmp_path):
    model, _ = _model()
    path = tmp_path / "m.safetensors"
    to_safetensors(model, path)
    before = path.read_bytes()
    weights = model.get_weights()
    weights["dense_0.w"][0, 0] = np.nan
    model.set_weights(weights)
    with pytest.raises(CheckpointError, match="dense_0.w holds NaN"):
        to_safetensors(model, path)
    assert path.read_bytes() == before


def test_files_that_are_not_nnx_models(tmp_path):
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros((2, 2), np.float32)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an nnx model"):
        nnx.load(foreign)
    with pytest.raises(CheckpointError, match="no safetensors file"):
        load_safetensors(tmp_path / "missing.safetensors")
    model, _ = _model()
    good = tmp_path / "good.safetensors"
    to_safetensors(model, good)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        nnx.load(damaged)


def test_tensors_that_do_not_fit_the_architecture(tmp_path):
    from safetensors.numpy import save_file

    model, _ = _model()
    path = tmp_path / "m.safetensors"
    header = {"format": "nnx-model", "version": "1", "dtype": "float32",
              "architecture": json.dumps(model.config())}
    weights = model.get_weights()
    weights["dense_0.w"] = np.zeros((5, 6), np.float32)
    save_file(weights, str(path), metadata=header)
    with pytest.raises(CheckpointError, match=r"dense_0.w has shape \(5, 6\)"):
        load_safetensors(path)
    weights = model.get_weights()
    weights["extra.w"] = np.zeros(1, np.float32)
    save_file(weights, str(path), metadata=header)
    with pytest.raises(CheckpointError, match="tensors this architecture does not: extra.w"):
        load_safetensors(path)
    newer = dict(header, version="99")
    save_file(model.get_weights(), str(path), metadata=newer)
    with pytest.raises(CheckpointError, match="newer nnx"):
        load_safetensors(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="no parameters yet"):
        to_safetensors(nnx.mlp([2, 3, 2]), tmp_path / "m.safetensors")
    model = nnx.mlp([2, 3, 2]).init("cpu", 0)
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        to_safetensors(model, tmp_path / "m.safetensors", metadata={"x": object()})
    assert not (tmp_path / "m.safetensors").exists()


def test_missing_safetensors_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    model = nnx.mlp([2, 3, 2]).init("cpu", 0)
    with pytest.raises(MissingExtra, match=r"pip install 'nnx-trainer\[safetensors\]'"):
        to_safetensors(model, tmp_path / "m.safetensors")
    with pytest.raises(MissingExtra, match=r"nnx-trainer\[safetensors\]"):
        nnx.load(tmp_path / "m.safetensors")


def test_an_image_model_round_trips(tmp_path):
    model = nnx.cnn((8, 8, 2), 3, filters=(4,), dense=8, batchnorm=True).init("cpu", 0)
    path = tmp_path / "cnn.safetensors"
    to_safetensors(model, path)
    again = nnx.load(path)
    assert again.input_shape == (8, 8, 2) and again.config() == model.config()
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(again(again.backend.asarray(x, "float32")),
                                  model(model.backend.asarray(x, "float32")))
