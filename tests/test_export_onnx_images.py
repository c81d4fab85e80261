"""ONNX export of image models: NHWC in and out, NCHW inside, checked by onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.layers import (
    ActivationLayer,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    Sequential,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nnx.export import to_onnx  # noqa: E402

TOL = 1e-5


def run_onnx(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def nnx_out(model, x):
    return model.backend.to_numpy(model(model.backend.asarray(x, model.dtype)))


def _randomise(model, rng):
    """Non-zero biases and BatchNorm statistics, so that every parameter shows."""
    weights = model.get_weights()
    for key, value in weights.items():
        if key.endswith(("running_var", "gamma")):
            weights[key] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        elif key.endswith((".b", "running_mean", "beta")):
            weights[key] = rng.normal(size=value.shape).astype(value.dtype)
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("padding", ["same", "valid", 1])
@pytest.mark.parametrize("kernel,stride", [(2, 1), (3, 1), (3, 2), (4, 2)])
def test_conv_paddings_strides_and_kernels(padding, kernel, stride):
    rng = np.random.default_rng(kernel * 10 + stride)
    model = Sequential([Conv2D(3, kernel, stride, padding), ActivationLayer("tanh"),
                        Conv2D(2, 3, padding="same")], input_shape=(7, 8, 2)).init("cpu", 0)
    _randomise(model, rng)
    x = rng.normal(size=(3, 7, 8, 2)).astype(np.float32)
    out = run_onnx(to_onnx(model), x)
    assert out.shape == nnx_out(model, x).shape  # images out, channels last
    np.testing.assert_allclose(out, nnx_out(model, x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("pool", [MaxPool2D(2), MaxPool2D(3, 2), AvgPool2D(2),
                                  AvgPool2D(3, 1)], ids=repr)
def test_pooling_layers(pool):
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(4, 3, bias=True), pool, GlobalAvgPool2D(), Dense(4, 3)],
                       input_shape=(9, 9, 1)).init("cpu", 1)
    _randomise(model, rng)
    for batch in (1, 6):
        x = rng.normal(size=(batch, 9, 9, 1)).astype(np.float32)
        np.testing.assert_allclose(run_onnx(to_onnx(model), x), nnx_out(model, x), rtol=TOL,
                                   atol=TOL)


def test_the_cnn_builder_transposes_once_each_way():
    rng = np.random.default_rng(2)
    model = _randomise(nnx.cnn((12, 12, 3), 5, filters=(4, 6), dense=16, batchnorm=True)
                       .init("cpu", 0), rng)
    proto = to_onnx(model, head="softmax")
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Transpose", "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv",
                   "BatchNormalization", "Relu", "MaxPool", "Transpose", "Flatten", "Gemm",
                   "Relu", "Gemm", "Softmax"]
    (inp,) = proto.graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch", 12, 12, 3]
    x = rng.uniform(size=(4, 12, 12, 3)).astype(np.float32)
    probs = nnx.losses.softmax(model.backend.asarray(nnx_out(model, x), "float32"))
    np.testing.assert_allclose(run_onnx(proto, x), probs, rtol=TOL, atol=TOL)


def test_a_trained_cnn_matches():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(64, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    model = nnx.cnn((8, 8, 1), 2, filters=(4,), dense=8, batchnorm=True, dropout=0.2)
    trainer = nnx.Trainer(model, seed=0, lr=0.01)
    trainer.fit(x, y, epochs=3, batch_size=16)
    np.testing.assert_allclose(run_onnx(to_onnx(model, head="softmax"), x),
                               trainer.predict_proba(x), rtol=TOL, atol=TOL)


def test_batchnorm_and_flatten_right_after_the_input():
    rng = np.random.default_rng(4)
    model = _randomise(Sequential([BatchNorm(2), Flatten(), Dense(5 * 4 * 2, 3)],
                                  input_shape=(5, 4, 2)).init("cpu", 0), rng)
    x = rng.normal(size=(3, 5, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(to_onnx(model), x), nnx_out(model, x), rtol=TOL,
                               atol=TOL)


def test_float64_image_models():
    rng = np.random.default_rng(5)
    model = _randomise(Sequential([BatchNorm(2), ActivationLayer("elu"), MaxPool2D(2),
                                   Flatten(), Dense(3 * 3 * 2, 2)],
                                  input_shape=(6, 6, 2)).init("cpu", 0, "float64"), rng)
    x = rng.normal(size=(2, 6, 6, 2))
    np.testing.assert_allclose(run_onnx(to_onnx(model), x), nnx_out(model, x), rtol=1e-10,
                               atol=1e-10)
    # valid ONNX in float64, though onnxruntime's CPU provider has no float64 Conv,
    # AveragePool or GlobalAveragePool kernels to run it
    conv = Sequential([Conv2D(3, 3), AvgPool2D(2), GlobalAvgPool2D()],
                      input_shape=(6, 6, 2)).init("cpu", 0, "float64")
    proto = to_onnx(conv)
    (out,) = proto.graph.output
    assert out.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 3]


def test_image_layers_without_an_input_shape_are_named():
    from nnx.errors import ConfigError

    model = Sequential([Conv2D(3, 3, in_channels=2), GlobalAvgPool2D()]).init("cpu", 0)
    with pytest.raises(ConfigError, match=r"layer 'conv2d_0' takes images .*input_shape="):
        to_onnx(model)
