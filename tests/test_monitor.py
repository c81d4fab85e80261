"""The doctor's monitor on every model shape the builders and ``Sequential`` can make.

The monitor watches a model through ``Sequential``'s observation hook, never by
replacing a layer's methods. A model without activation layers (a linear or
softmax-regression model, ``--hidden ""``), a stack of only user-defined layers,
BatchNorm, dropout, mixed activations, an activation before any sized layer: the
doctor trains each one to the end and writes its report, with and without an
output directory, and leaves the model as it found it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace

import nnx
from nnx.doctor import Doctor, Monitor

ROOT = Path(__file__).resolve().parents[1]


class Scale(nnx.Layer):
    """A user layer with a 1-d parameter: ``y = x * s``."""

    def __init__(self, n=None):
        super().__init__()
        self.n_in = self.n_out = n

    def init(self, backend, rng, dtype="float32"):
        self.params["s"] = backend.asarray(rng.uniform(0.5, 1.5, self.n_in or 4), dtype)
        super().init(backend, rng, dtype)

    def forward(self, x, *, train=False):
        xp, s = array_namespace(x), self.params["s"]

        def backward(dy):
            self.grads["s"] += xp.sum(dy * x, axis=0)
            return dy * s

        return x * s, backward


class Affine(nnx.Layer):
    """A user-written dense layer: ``y = x @ w`` (a 2-d parameter)."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.n_in, self.n_out = n_in, n_out

    def init(self, backend, rng, dtype="float32"):
        super().init(backend, rng, dtype)
        w = rng.standard_normal((self.n_in, self.n_out)) / np.sqrt(self.n_in)
        self.params["w"] = backend.asarray(w, dtype)

    def forward(self, x, *, train=False):
        xp, w = array_namespace(x), self.params["w"]

        def backward(dy):
            self.grads["w"] += xp.matmul(x.mT, dy)
            return xp.matmul(dy, w.mT)

        return xp.matmul(x, w), backward


class SoftClip(nnx.Layer):
    """A user-written parameter-free nonlinearity: ``y = x / (1 + |x|)``."""

    def forward(self, x, *, train=False):
        xp = array_namespace(x)
        d = 1.0 + xp.abs(x)

        def backward(dy):
            return dy / (d * d)

        return x / d, backward


N_IN, CLASSES = 4, 3

#: name -> (model builder, loss)
MODELS = {
    "linear": (lambda: nnx.mlp([N_IN, CLASSES]), "cross_entropy"),
    "linear-regression": (lambda: nnx.mlp([N_IN, 1]), "mse"),
    "linear-sigmoid-output": (lambda: nnx.mlp([N_IN, 1], output="sigmoid"), "mse"),
    "relu": (lambda: nnx.mlp([N_IN, 8, CLASSES]), "cross_entropy"),
    "deep-tanh-sigmoid": (lambda: nnx.mlp([N_IN, 8, 8, 8, CLASSES],
                                          activation=["tanh", "sigmoid", "tanh"]),
                          "cross_entropy"),
    "mixed": (lambda: nnx.mlp([N_IN, 6, CLASSES], activation="mixed:relu,tanh"),
              "cross_entropy"),
    "batchnorm-dropout": (lambda: nnx.mlp([N_IN, 8, 8, CLASSES], batchnorm=True,
                                          dropout=0.2), "cross_entropy"),
    "output-activation": (lambda: nnx.mlp([N_IN, 8, CLASSES], output="relu"),
                          "cross_entropy"),
    "only-user-layers": (lambda: nnx.Sequential([Affine(N_IN, 6), SoftClip(), Scale(6),
                                                 Affine(6, CLASSES)]), "cross_entropy"),
    "only-user-layers-1d": (lambda: nnx.Sequential([Scale(N_IN), SoftClip(), Scale(N_IN)]),
                            "mse"),
    "activation-first": (lambda: nnx.Sequential([nnx.ActivationLayer("tanh"),
                                                 nnx.Dense(N_IN, CLASSES)]), "cross_entropy"),
    "unsized-activation": (lambda: nnx.Sequential([nnx.Dense(N_IN, 6), Scale(6),
                                                   nnx.ActivationLayer("relu"),
                                                   nnx.Dense(6, CLASSES)]), "cross_entropy"),
}


def _data(loss, n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_IN)).astype(np.float32)
    if loss == "mse":
        return x, (x[:, :1] * 0.5).astype(np.float32)
    return x, np.argmax(x[:, :CLASSES], axis=1)


def _fit_with_doctor(model, loss, out_dir, device="numpy", epochs=3, x=None, y=None):
    if x is None:
        x, y = _data(loss)
        if loss == "mse" and model.n_out not in (None, 1):
            y = np.repeat(y, model.n_out, axis=1)
    printed = []
    doctor = Doctor(out_dir=out_dir, print_fn=printed.append, every=2)
    trainer = nnx.Trainer(model, loss, "adam", lr=1e-2, device=device, callbacks=[doctor])
    history = trainer.fit(x, y, epochs=epochs, batch_size=16)
    return doctor, history, printed


@pytest.mark.parametrize("with_out_dir", [False, True], ids=["no-out-dir", "out-dir"])
@pytest.mark.parametrize("name", list(MODELS))
def test_the_doctor_never_breaks_a_run(name, with_out_dir, tmp_path):
    build, loss = MODELS[name]
    model = build()
    out_dir = str(tmp_path / "run") if with_out_dir else None
    doctor, history, printed = _fit_with_doctor(model, loss, out_dir)
    assert len(history.history["loss"]) == 3 and np.isfinite(history.history["loss"]).all()
    report = doctor.report
    assert report is not None and printed and printed[-1] == report.summary()
    assert doctor.trace.n_steps == 3 * 6  # 96 rows, batch 16: every step's loss is kept
    n_act = sum(type(la).__name__ in ("ActivationLayer", "MixedActivation")
                for la in model.layers)
    assert len(doctor.trace.layers) == n_act
    assert doctor.trace.act.shape == (doctor.trace.sample_steps.size, n_act, 5)
    # the model is left as it was found: no observer, no replaced method
    assert model.observers == ()
    assert all("forward" not in la.__dict__ for la in model.layers)
    if with_out_dir:
        files = sorted(os.listdir(out_dir))
        assert {"doctor.json", "doctor.md"} <= set(files), files
        data = json.loads((tmp_path / "run" / "doctor.json").read_text())
        assert isinstance(data, dict) and data
    else:
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["strict:device1", "torch"])
@pytest.mark.parametrize("name", ["linear", "only-user-layers", "mixed"])
def test_the_doctor_on_other_backends(name, device, tmp_path):
    from conftest import get_backend_or_skip

    backend = get_backend_or_skip(device)
    build, loss = MODELS[name]
    doctor, history, _ = _fit_with_doctor(build(), loss, str(tmp_path), device=backend)
    assert np.isfinite(history.history["loss"]).all() and doctor.report is not None


def test_cnn_models_are_watched_too(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4, :, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
    model = nnx.cnn((8, 8, 1), 2, filters=(4,), dense=8)
    doctor, history, _ = _fit_with_doctor(model, "cross_entropy", str(tmp_path), x=x, y=y,
                                          epochs=2)
    assert np.isfinite(history.history["loss"]).all() and doctor.report is not None
    # the conv ReLU's units are its 4 filters; counts are in examples (a position of a
    # feature map is 1/(h*w) of one), so no unit is active on more rows than were seen
    assert [u.n for u in doctor.trace.layers] == [4, 8]
    window = doctor.trace.windows[-1]
    for active in window.active:
        assert active is not None and np.all(active <= window.rows + 1e-3)


def test_the_monitor_observes_through_the_hook():
    model = nnx.mlp([N_IN, 8, 8, CLASSES]).init("numpy", 0)
    mon = Monitor().attach(model)
    assert model.observers == (mon,)
    assert all("forward" not in la.__dict__ for la in model.layers)
    mon.detach()
    assert model.observers == () and mon.model is None
    linear = nnx.mlp([N_IN, CLASSES]).init("numpy", 0)
    Monitor().attach(linear)
    assert linear.observers == ()  # nothing to observe: not even the hook's cost


def test_the_monitor_is_observing_only_on_sampled_steps():
    model = nnx.mlp([N_IN, 8, CLASSES]).init("numpy", 0)
    mon = Monitor(every=5).attach(model)
    watched = []
    for step in range(30):
        mon.begin_step(step)
        watched.append(model.observers == (mon,))
        mon.after_update(step, 0.0)
    sampled = [s < 10 or s % 5 == 0 for s in range(30)]
    assert watched == sampled
    mon.detach()
    assert model.observers == ()


def test_an_observer_of_the_user_sees_the_run_beside_the_doctor():
    seen = []

    class Count(nnx.layers.Observer):
        def on_forward(self, index, layer, x, y, *, train):
            seen.append(index)

    model = nnx.mlp([N_IN, 8, CLASSES]).init("numpy", 0)
    mine = Count()
    model.add_observer(mine)
    _fit_with_doctor(model, "cross_entropy", None, epochs=1)
    assert model.observers == (mine,)  # the doctor removed only itself
    assert seen and set(seen) == {0, 1, 2}


def test_command_line_doctor_on_a_linear_model(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--dataset",
                        "blobs", "--hidden", "", "--epochs", "2", "--doctor", "--quiet",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=180, env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert (out / "doctor.json").is_file() and (out / "doctor.md").is_file()
