"""ONNX export: every mapping checked by onnx.checker and run by onnxruntime against nnx."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.errors import ConfigError, MissingExtra
from nnx.layers import ActivationLayer, BatchNorm, Dense, Dropout, Layer, Sequential

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nnx.export import to_onnx  # noqa: E402

#: the agreement asked of the export (float32 outputs of order one)
TOL = 1e-5

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softplus", "abs", "sin", "leaky_relu:0.2",
               "elu:0.5", "gelu", "silu", "identity", "mixed:relu,tanh,sin"]


def run_onnx(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def nnx_out(model, x):
    return model.backend.to_numpy(model(model.backend.asarray(x, model.dtype)))


def scramble_batchnorm(model, rng):
    """Running statistics, scale and shift far from their initial 0/1."""
    weights = model.get_weights()
    for key, value in weights.items():
        if key.endswith("running_var"):
            weights[key] = rng.uniform(0.3, 3.0, value.shape).astype(value.dtype)
        elif key.endswith(("running_mean", "gamma", "beta")):
            weights[key] = rng.normal(size=value.shape).astype(value.dtype)
    model.set_weights(weights)


@pytest.mark.parametrize("opset", [13, 20])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_onnxruntime(activation, opset):
    rng = np.random.default_rng(1)
    model = nnx.mlp([5, 16, 8, 3], activation=activation, batchnorm=True,
                    dropout=0.3).init("cpu", 0)
    scramble_batchnorm(model, rng)
    proto = to_onnx(model, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    for batch in (1, 37):  # the batch dimension is dynamic
        x = rng.normal(size=(batch, 5)).astype(np.float32)
        out = run_onnx(proto, x)
        assert out.shape == (batch, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, nnx_out(model, x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float64_models_export_in_float64(activation):
    rng = np.random.default_rng(2)
    model = nnx.mlp([4, 9, 2], activation=activation, batchnorm=True).init("cpu", 3, "float64")
    scramble_batchnorm(model, rng)
    x = rng.normal(size=(11, 4))
    out = run_onnx(to_onnx(model), x)
    assert out.dtype == np.float64
    # onnxruntime's float64 Gelu is accurate to about 1e-8; the rest to about 1e-13
    np.testing.assert_allclose(out, nnx_out(model, x), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("activation", ACTIVATIONS[:-1])
def test_extreme_inputs_stay_finite_and_equal(activation):
    model = Sequential([ActivationLayer(activation)]).init("cpu", 0)
    x = np.array([[-1000, -100, -30, -5, -1e-3, 0, 1e-3, 5, 30, 100, 1000]], np.float32)
    out = run_onnx(to_onnx(model), x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, nnx_out(model, x), rtol=TOL, atol=TOL)


def test_graph_maps_layers_to_their_operators():
    model = nnx.mlp([6, 8, 8, 4], activation="relu", batchnorm=True, dropout=0.5).init("cpu", 0)
    proto = to_onnx(model, head="softmax")
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Gemm", "BatchNormalization", "Relu"] * 2 + ["Gemm", "Softmax"]
    assert "Dropout" not in ops
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 6]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 4]
    # the running statistics are in the file
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    weights = model.get_weights()
    stats = [k for k in inits if "running_var" in k]
    assert len(stats) == 2
    np.testing.assert_array_equal(inits[stats[0]], weights["batchnorm_1.running_var"])
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["nnx.head"] == "softmax" and '"Dense"' in props["nnx.architecture"]


def _trained(loss, n_out, seed=0):
    data = nnx.data.load("spirals", n=300, seed=seed)
    y = data.y_train if n_out > 1 else (data.y_train % 2)
    model = nnx.mlp([data.n_features, 32, 32, n_out], activation="tanh", batchnorm=True,
                    dropout=0.1)
    trainer = nnx.Trainer(model, loss=loss, optimizer="adam", lr=0.01, seed=seed)
    trainer.fit(data.x_train, y, epochs=15, batch_size=32)
    return trainer, data.x_test.astype(np.float32)


def test_trained_model_with_heads_matches_the_trainer():
    trainer, x = _trained("cross_entropy", 3)
    model = trainer.model
    logits = run_onnx(to_onnx(model), x)
    np.testing.assert_allclose(logits, nnx_out(model, x), rtol=TOL, atol=TOL)
    probs = run_onnx(to_onnx(model, head="softmax"), x)
    np.testing.assert_allclose(probs, trainer.predict_proba(x), rtol=TOL, atol=TOL)
    assert np.array_equal(probs.argmax(axis=1), trainer.predict(x))


def test_binary_model_with_a_sigmoid_head():
    trainer, x = _trained("bce", 1, seed=1)
    probs = run_onnx(to_onnx(trainer.model, head="sigmoid"), x)
    np.testing.assert_allclose(probs[:, 0], trainer.predict_proba(x)[:, 1], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("device", ["strict:device1", "torch"])
def test_models_on_other_backends_export(device):
    try:
        model = nnx.mlp([3, 7, 2], activation="gelu", batchnorm=True).init(device, 0)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(to_onnx(model), x), nnx_out(model, x), rtol=TOL,
                               atol=TOL)


def test_written_file_loads_and_runs(tmp_path):
    model = nnx.mlp([4, 5, 3]).init("cpu", 0)
    path = tmp_path / "model.onnx"
    returned = to_onnx(model, path)
    loaded = onnx.load(str(path))
    assert loaded == returned
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(session.run(["output"], {"input": x})[0], nnx_out(model, x),
                               rtol=TOL, atol=TOL)


def test_dense_without_bias_and_models_of_no_computation():
    model = Sequential([Dense(3, 2, bias=False), Dropout(0.5)]).init("cpu", 0)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    proto = to_onnx(model)
    assert [len(n.input) for n in proto.graph.node] == [2]
    np.testing.assert_allclose(run_onnx(proto, x), nnx_out(model, x), rtol=TOL, atol=TOL)
    idle = Sequential([Dropout(0.2), BatchNorm(3)]).init("cpu", 0)
    np.testing.assert_allclose(run_onnx(to_onnx(idle), x), nnx_out(idle, x), rtol=TOL,
                               atol=TOL)
    only_dropout = Sequential([Dense(3, 3), Dropout(0.2)]).init("cpu", 0)
    assert run_onnx(to_onnx(only_dropout), x).shape == (2, 3)


def test_a_users_activation_is_named():
    def cube(z):
        return z * z * z

    def cube_backward(*, z, a):
        return 3 * z * z

    act = nnx.define_activation("cube", cube, cube_backward, register=False)
    model = Sequential([Dense(2, 3), ActivationLayer(act), Dense(3, 1)]).init("cpu", 0)
    with pytest.raises(ConfigError, match=r"activation 'cube' .*no ONNX operator"):
        to_onnx(model)


def test_a_user_activation_reusing_a_builtin_name_is_refused():
    def fake(z):
        return z

    def fake_backward(*, z, a):
        from array_api_compat import array_namespace
        return array_namespace(z).ones_like(z)

    act = nnx.define_activation("relu", fake, fake_backward, register=False)
    model = Sequential([Dense(2, 2), ActivationLayer(act)]).init("cpu", 0)
    with pytest.raises(ConfigError, match="not one of nnx's built-in"):
        to_onnx(model)


def test_a_users_layer_is_named():
    class Twice(Layer):
        builtin = True

        def forward(self, x, *, train=False):
            return 2 * x, lambda dy: 2 * dy

    model = Sequential([Dense(2, 2), Twice()]).init("cpu", 0)
    with pytest.raises(ConfigError, match=r"layer 'twice_1' \(Twice\) has no ONNX mapping"):
        to_onnx(model)


def test_a_registered_mapping_exports_a_users_layer(monkeypatch):
    from nnx.export import ONNX_LAYERS, register_onnx

    class Twice(Layer):
        builtin = True

        def forward(self, x, *, train=False):
            return 2 * x, lambda dy: 2 * dy

    monkeypatch.setitem(ONNX_LAYERS, "Twice", None)  # removed again after the test
    register_onnx("Twice", lambda g, layer, weights, x: g.op("Mul", [x, g.const("two", 2.0)],
                                                             layer.name))
    model = Sequential([Dense(2, 3), Twice()]).init("cpu", 0)
    x = np.ones((4, 2), np.float32)
    np.testing.assert_allclose(run_onnx(to_onnx(model), x), nnx_out(model, x), rtol=TOL,
                               atol=TOL)


def test_bad_arguments():
    model = nnx.mlp([2, 3, 2]).init("cpu", 0)
    with pytest.raises(ConfigError, match="unknown head 'softmin'"):
        to_onnx(model, head="softmin")
    for opset in (12, 10_000, "20", True):
        with pytest.raises(ConfigError, match="opset must be an integer from 13"):
            to_onnx(model, opset=opset)
    with pytest.raises(ConfigError, match="no parameters yet"):
        to_onnx(nnx.mlp([2, 3, 2]))
    sig = nnx.mlp([2, 3, 1], output="sigmoid").init("cpu", 0)
    with pytest.raises(ConfigError, match="output activation twice"):
        to_onnx(sig, head="sigmoid")
    assert run_onnx(to_onnx(sig), np.zeros((1, 2), np.float32)).shape == (1, 1)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = nnx.mlp([2, 3, 2]).init("cpu", 0)
    with pytest.raises(MissingExtra, match=r"pip install 'nnx-trainer\[onnx\]'"):
        to_onnx(model)
