"""Convolutional layers and networks: PyTorch references, bad input, layer strings.

Images are (batch, height, width, channels) in nnx and (batch, channels, height,
width) in PyTorch; weights (k, k, C_in, F) against (F, C_in, k, k). Every
reference runs on PyTorch's CPU in float64 from the same weights and compares
outputs and every gradient to 1e-10. Shapes, devices, dtypes and float64
gradient checks of each layer on every backend are in tests/test_table.py; training
with the Trainer (files, host syncs, non-finite values, accuracy) in
tests/test_conv_train.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.errors import ConfigError, DataError
from nnx.layers.images import padding_for

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = 1e-10


def nchw(a):
    return torch.tensor(np.asarray(a, np.float64)).permute(0, 3, 1, 2)


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def close(a, b, tol=TOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(b), initial=0.0), 1.0)
    assert np.max(np.abs(a - b), initial=0.0) <= tol * scale, np.max(np.abs(a - b))


def run(layer, x, g=None, train=True, rng=None):
    """nnx float64 forward and backward on NumPy: (y, dx, upstream gradient)."""
    y, backward = layer.forward(x, train=train)
    g = np.random.default_rng(1).standard_normal(y.shape) if g is None else g
    return y, backward(g), g


# --- references against PyTorch ------------------------------------------------------

CONVS = [  # (kernel, stride, padding, height, width, in, out)
    (3, 1, "same", 7, 6, 2, 4), (2, 1, "same", 5, 5, 3, 2), (3, 2, "same", 7, 8, 2, 3),
    (3, 2, "valid", 7, 8, 2, 3), (4, 3, 1, 9, 7, 1, 2), (1, 1, "valid", 3, 3, 2, 2),
    (5, 1, "same", 4, 4, 1, 3), (3, 1, 0, 3, 3, 2, 1)]


@pytest.mark.parametrize("k, s, pad, h, w, c, f", CONVS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_pytorch(k, s, pad, h, w, c, f, bias):
    conv = nnx.Conv2D(f, k, s, pad, bias=bias, in_channels=c)
    conv.init(backends.get("numpy"), np.random.default_rng(0), "float64")
    x = np.random.default_rng(2).standard_normal((3, h, w, c))
    y, dx, g = run(conv, x)
    xt = nchw(x).requires_grad_()
    wt = torch.tensor(conv.params["w"]).permute(3, 2, 0, 1).contiguous().requires_grad_()
    bt = torch.tensor(conv.params["b"]).requires_grad_() if bias else None
    (top, bottom), (left, right) = padding_for(pad, h, k, s), padding_for(pad, w, k, s)
    yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=s)
    yt.backward(nchw(g))
    close(y, nhwc(yt))
    close(dx, nhwc(xt.grad))
    close(conv.grads["w"], wt.grad.permute(2, 3, 1, 0).numpy())
    if bias:
        close(conv.grads["b"], bt.grad.numpy())


POOLS = [(2, None, 6, 6), (2, None, 7, 5), (3, 2, 7, 7), (3, 1, 5, 6), (2, 3, 8, 8)]


@pytest.mark.parametrize("size, stride, h, w", POOLS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_pytorch_ties_included(kind, size, stride, h, w):
    layer = (nnx.MaxPool2D if kind == "max" else nnx.AvgPool2D)(size, stride)
    # values on a grid of 0.5: most windows hold ties, which PyTorch sends to one input
    x = np.round(2 * np.random.default_rng(3).standard_normal((2, h, w, 3))) / 2
    y, dx, g = run(layer, x)
    xt = nchw(x).requires_grad_()
    yt = (F.max_pool2d if kind == "max" else F.avg_pool2d)(xt, size, stride or size)
    yt.backward(nchw(g))
    close(y, nhwc(yt))
    close(dx, nhwc(xt.grad))


def test_max_pool_ties_send_the_gradient_to_one_input():
    x = np.zeros((1, 4, 4, 1))
    y, dx, _ = run(nnx.MaxPool2D(2), x, g=np.ones((1, 2, 2, 1)))
    assert dx.sum() == 4 and np.array_equal(dx[0, ::2, ::2, 0], np.ones((2, 2)))


@pytest.mark.parametrize("size, stride, h, w", POOLS)
@pytest.mark.parametrize("train", [True, False])
def test_max_pool_in_batch_chunks_is_bitwise_the_whole_batch(size, stride, h, w, train,
                                                             monkeypatch):
    """On NumPy max-pooling takes the batch in chunks that stay in the cache
    (nnx.backends.conv_fast.batch_parts): bitwise the values and gradients of the
    whole batch at once, ties included, with a batch that does not split evenly."""
    from nnx.backends import conv_fast

    x = np.round(2 * np.random.default_rng(3).standard_normal((7, h, w, 3))) / 2
    monkeypatch.setattr(conv_fast, "CHUNK_BYTES", x[:2].nbytes)
    assert len(conv_fast.batch_parts(x)) == 4
    got = {}
    for enabled in (True, False):
        monkeypatch.setattr(conv_fast, "ENABLED", enabled)
        got[enabled] = run(nnx.MaxPool2D(size, stride), x, train=train)[:2]
    for a, b in zip(got[True], got[False]):
        assert a.shape == b.shape and a.tobytes() == np.ascontiguousarray(b).tobytes()


def test_global_pool_flatten_and_batchnorm_match_pytorch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    y, dx, g = run(nnx.GlobalAvgPool2D(), x)
    xt = nchw(x).requires_grad_()
    yt = xt.mean(dim=(2, 3))
    yt.backward(torch.tensor(g))
    close(y, yt.detach().numpy())
    close(dx, nhwc(xt.grad))

    y, dx, g = run(nnx.Flatten(), x)
    assert y.shape == (3, 120) and np.array_equal(y[1], x[1].ravel())
    assert np.array_equal(dx, g.reshape(x.shape))

    bn = nnx.BatchNorm(6, momentum=0.2)
    bn.init(backends.get("numpy"), rng, "float64")
    ref = torch.nn.BatchNorm2d(6, momentum=0.2).double()
    y, dx, g = run(bn, x)
    xt = nchw(x).requires_grad_()
    yt = ref(xt)
    yt.backward(nchw(g))
    close(y, nhwc(yt))
    close(dx, nhwc(xt.grad))
    close(bn.grads["gamma"], ref.weight.grad.numpy())
    close(bn.grads["beta"], ref.bias.grad.numpy())
    close(bn.state["running_mean"], ref.running_mean.numpy())
    close(bn.state["running_var"], ref.running_var.numpy())
    ref.eval()
    close(bn.forward(x, train=False)[0], nhwc(ref(nchw(x))))


@pytest.mark.parametrize("k, s, pad, h, w, c, f", CONVS)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-6)])
def test_torch_fast_path_equals_the_portable_path(k, s, pad, h, w, c, f, dtype, tol,
                                                  monkeypatch):
    """On torch tensors Conv2D calls torch's convolution (nnx.backends.conv_fast): the
    same values and gradients as the im2col path on the same tensors."""
    from nnx.backends import conv_fast

    backend = backends.get("torch")
    x = np.random.default_rng(5).standard_normal((3, h, w, c))
    g = np.random.default_rng(6).standard_normal((3, *nnx.Sequential(
        [nnx.Conv2D(f, k, s, pad, in_channels=c)], input_shape=(h, w, c)).layers[0]
        .output_shape((h, w, c))))
    got = {}
    for enabled in (True, False):
        monkeypatch.setattr(conv_fast, "ENABLED", enabled)
        conv = nnx.Conv2D(f, k, s, pad, in_channels=c)
        conv.init(backend, np.random.default_rng(0), dtype)
        y, backward = conv.forward(backend.asarray(x, dtype), train=True)
        dx = backward(backend.asarray(g, dtype))
        got[enabled] = [backend.to_numpy(a) for a in (y, dx, conv.grads["w"], conv.grads["b"])]
        assert all(a.dtype == np.dtype(dtype) for a in got[enabled])
    for fast, portable in zip(got[True], got[False]):
        close(fast, portable, tol)


@pytest.mark.parametrize("k, s, pad, h, w, c, f", CONVS + [(2, 1, 3, 3, 4, 2, 2),
                                                      (3, 3, 4, 5, 5, 3, 2)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_im2col_is_bitwise_the_portable_one(k, s, pad, h, w, c, f, bias, dtype,
                                                  monkeypatch):
    """On NumPy Conv2D takes its columns from one copy of every window
    (nnx.backends.conv_fast.numpy_im2col): bitwise the portable columns, so bitwise the
    same values and gradients."""
    from nnx.backends import conv_fast

    from nnx.layers.images import im2col, window_output

    backend = backends.get("numpy")
    x = np.random.default_rng(5).standard_normal((3, h, w, c)).astype(dtype)
    conv = nnx.Conv2D(f, k, s, pad, bias=bias, in_channels=c)
    top, _, left, _, ho, wo = window_output(conv, (h, w), k, s, pad)
    args = (x, k, s, (top, left), (ho, wo))
    fast, portable = conv_fast.numpy_im2col(*args, ones=bias), im2col(*args, ones=bias)
    assert fast.dtype == portable.dtype and fast.shape == portable.shape
    assert fast.tobytes() == np.ascontiguousarray(portable).tobytes()
    got = {}
    for enabled in (True, False):
        monkeypatch.setattr(conv_fast, "ENABLED", enabled)
        conv = nnx.Conv2D(f, k, s, pad, bias=bias, in_channels=c)
        conv.init(backend, np.random.default_rng(0), dtype)
        y, backward = conv.forward(x, train=True)
        dx = backward(np.random.default_rng(6).standard_normal(y.shape).astype(dtype))
        got[enabled] = [y, dx, *conv.grads.values()]
    for a, b in zip(got[True], got[False]):
        assert a.dtype == b.dtype and a.tobytes() == np.ascontiguousarray(b).tobytes()


class TorchCNN(torch.nn.Module):
    """The classic CNN in PyTorch, NCHW, flattening in nnx's (h, w, c) order; dropout
    uses the masks it is given so both libraries drop the same units."""

    def __init__(self, model):
        super().__init__()
        self.nnx_layers = model.layers
        self.mods = torch.nn.ModuleList()
        for la in model.layers:
            if isinstance(la, nnx.Conv2D):
                m = torch.nn.Conv2d(la.in_channels, la.filters, la.kernel_size, padding="same")
                m.weight.data = torch.tensor(la.params["w"]).permute(3, 2, 0, 1).contiguous()
            elif isinstance(la, nnx.Dense):
                m = torch.nn.Linear(la.n_in, la.n_out)
                m.weight.data = torch.tensor(la.params["w"]).T.contiguous()
            else:
                self.mods.append(None)
                continue
            m.bias.data = torch.tensor(la.params["b"])
            self.mods.append(m.double())
        self.masks = []

    def forward(self, x):
        masks = iter(self.masks)
        for la, m in zip(self.nnx_layers, self.mods):
            if m is not None:
                x = m(x)
            elif isinstance(la, nnx.MaxPool2D):
                x = F.max_pool2d(x, la.size)
            elif isinstance(la, nnx.Flatten):
                x = x.permute(0, 2, 3, 1).flatten(1)
            elif isinstance(la, nnx.Dropout):
                x = x * next(masks)
            else:
                x = torch.relu(x)
        return x


class SharedMasks:
    """A Dropout generator that also hands each mask to the PyTorch model."""

    def __init__(self, torch_model, p, seed=5):
        self.torch_model, self.p, self.gen = torch_model, p, np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        u = self.gen.random(shape)
        self.torch_model.masks.append(torch.tensor((u < 1 - self.p) / (1 - self.p)))
        return u.astype(np.float64)


def test_cnn_forward_and_backward_match_pytorch():
    model = nnx.cnn((12, 10, 2), 5).init("numpy", 0, "float64")
    ref = TorchCNN(model)
    model[9].rng = SharedMasks(ref, 0.25)
    x = np.random.default_rng(6).standard_normal((4, 12, 10, 2))
    y_label = np.array([0, 3, 4, 1])
    out, backward = model.forward(x, train=True)
    value, dout = nnx.get_loss("cross_entropy")(out, y_label)
    dx = backward(dout)
    xt = nchw(x).requires_grad_()
    out_t = ref(xt)
    loss_t = F.cross_entropy(out_t, torch.tensor(y_label))
    loss_t.backward()
    close(out, out_t.detach().numpy())
    assert abs(float(value) - float(loss_t.detach())) < TOL
    close(dx, nhwc(xt.grad))
    for la, m in zip(model.layers, ref.mods):
        if m is None:
            continue
        w = m.weight.grad.permute(2, 3, 1, 0) if m.weight.ndim == 4 else m.weight.grad.T
        close(la.grads["w"], w.numpy())
        close(la.grads["b"], m.bias.grad.numpy())


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_training_steps_match_pytorch(dtype, tol):
    """Adam steps of the classic CNN from the same weights, batches and dropout masks."""
    model = nnx.cnn((10, 10, 1), 4).init("numpy", 1, "float64")
    ref = TorchCNN(model)
    model.init("numpy", 1, dtype)  # the same weights in the dtype under test
    model[9].rng = SharedMasks(ref, 0.25)
    opt = nnx.Adam(2e-3)
    opt_t = torch.optim.Adam(ref.parameters(), lr=2e-3)
    rng = np.random.default_rng(7)
    x = rng.random((48, 10, 10, 1))
    y = (x[:, :5].sum(axis=(1, 2, 3)) > x[:, 5:].sum(axis=(1, 2, 3))).astype(np.int64) * 2
    loss = nnx.get_loss("cross_entropy")
    for _ in range(6):
        idx = rng.permutation(48)[:16]
        out, backward = model.forward(x[idx].astype(dtype), train=True)
        backward(loss(out, y[idx])[1], need_dx=False)
        opt.step(model)
        opt_t.zero_grad()
        F.cross_entropy(ref(nchw(x[idx])), torch.tensor(y[idx])).backward()
        opt_t.step()
        ref.masks.clear()
    for la, m in zip(model.layers, ref.mods):
        if m is not None:
            w = m.weight.permute(2, 3, 1, 0) if m.weight.ndim == 4 else m.weight.T
            close(la.params["w"], w.detach().numpy(), tol)
            close(la.params["b"], m.bias.detach().numpy(), tol)


# --- bad input -----------------------------------------------------------------------

def test_image_input_errors_name_the_expected_shape():
    conv = nnx.Conv2D(4, 3, in_channels=1)
    nnx.Sequential([conv]).init("numpy", 0)
    with pytest.raises(DataError, match=r"expects images of shape \(batch, height, width, 1\)"
                                        r", got shape \(2, 8, 8\).*x\[\.\.\., None\]"):
        conv.forward(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataError, match="3 channels instead of 1"):
        conv.forward(np.zeros((2, 8, 8, 3), np.float32))
    valid = nnx.Conv2D(4, 5, padding="valid", in_channels=1)
    nnx.Sequential([valid]).init("numpy", 0)
    with pytest.raises(DataError, match="5x5 window does not fit images of 3x3"):
        valid.forward(np.zeros((2, 3, 3, 1), np.float32))


def test_stacks_that_do_not_fit_are_config_errors():
    with pytest.raises(ConfigError, match="'maxpool2d_5'.*2x2 window does not fit images "
                                          "of 1x1.*shrink to zero"):
        nnx.cnn((2, 2, 1), 10)
    with pytest.raises(ConfigError, match=r"'conv2d_0'.*3x3 window does not fit images of "
                                          r"2x2 \(after padding\)|'conv2d_0'.*2x2"):
        nnx.Sequential([nnx.Conv2D(2, 3, padding="valid")], input_shape=(2, 2, 1))
    with pytest.raises(ConfigError, match="'conv2d_1' expects 3 input channels"):
        nnx.Sequential([nnx.Conv2D(2, 3), nnx.Conv2D(2, 3, in_channels=3)],
                       input_shape=(5, 5, 1))
    with pytest.raises(ConfigError, match="'dense_1' expects 10 features.*shape \\(5, 5, 2\\)"
                                          ".*Flatten"):
        nnx.Sequential([nnx.Conv2D(2, 3), nnx.Dense(10, 2)], input_shape=(5, 5, 1))
    with pytest.raises(ConfigError, match="does not know its input channels"):
        nnx.Sequential([nnx.Conv2D(2, 3)]).init("numpy", 0)
    for bad in (dict(filters=0, kernel_size=3), dict(filters=2, kernel_size=3, padding="full"),
                dict(filters=2, kernel_size=2.5), dict(filters=2, kernel_size=3, stride=0)):
        with pytest.raises(ConfigError, match="Conv2D"):
            nnx.Conv2D(**bad)
    with pytest.raises(ConfigError, match="MaxPool2D size"):
        nnx.MaxPool2D(0)


def test_layer_strings_build_the_stack_they_describe():
    from nnx.models import from_spec

    m = from_spec("conv:32:3,relu,maxpool:2,flatten,dense:128,relu", (28, 28, 1), 10)
    kinds = [type(la).__name__ for la in m.layers]
    assert kinds == ["Conv2D", "ActivationLayer", "MaxPool2D", "Flatten", "Dense",
                     "ActivationLayer", "Dense"]
    assert m[4].n_in == 14 * 14 * 32 and m.n_out == 10 and m.input_shape == (28, 28, 1)
    m = from_spec("conv:8:3:2:valid,batchnorm,leaky_relu:0.2,avgpool:2:1,gap,dropout:0.1",
                  (9, 9, 3), 4)
    assert m[0].stride == 2 and m[0].padding == "valid" and m[1].n_in == 8
    assert m[-1].n_in == 8 and m[2].config() == {"activation": "leaky_relu:0.2"}
    for spec, match in (("conv:8", "takes 2 to 3 numbers"), ("conv:8:3,dense:4", "flatten"),
                        ("conv:8:3", "end it with flatten"), ("pool:2", "unknown layer"),
                        ("conv:8:x", "whole numbers"), ("", "empty"),
                        ("flatten:2", "takes no numbers"), ("dropout", "one rate")):
        with pytest.raises(ConfigError, match=match):
            from_spec(spec, (8, 8, 1), 10)
