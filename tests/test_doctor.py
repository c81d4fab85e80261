"""The doctor: findings and the report, the monitor, the checks before training, the
doctor's files and its command line. Detectors on failing runs are in
test_doctor_detectors.py, healthy runs in test_doctor_healthy.py."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from doctor_runs import blobs, by_id, ids, with_weights

import nnx
from nnx import backends
from nnx.doctor import CATALOGUE, Doctor, Finding, Monitor, Report, check, run_detectors
from nnx.doctor.findings import sort_findings
from nnx.train import Trainer

# failures on purpose overflow float32; NumPy says so
pytestmark = pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")


# --- findings and report -------------------------------------------------------

def test_finding_ids_are_checked():
    with pytest.raises(ValueError):
        Finding("no-such-id", "warning", "t", "c", "f")
    with pytest.raises(ValueError):
        Finding("dead-relu", "fatal", "t", "c", "f")
    f = Finding("dead-relu", "info", "t", "c", "f", evidence={"x": np.float32(0.123456789)})
    assert f.evidence["x"] == pytest.approx(0.1235)
    assert json.dumps(f.to_dict())
    assert len(CATALOGUE) >= 23


def test_report_healthy_is_one_line_and_files(tmp_path):
    report = Report([Finding("overfitting", "info", "a note", "c", "f")])
    assert report.healthy
    assert "\n" not in report.summary() and "healthy" in report.summary()
    sick = Report([Finding("dead-relu", "warning", "dead", "cause", "fix", layers=["dense_0"]),
                   Finding("non-finite", "error", "nan", "cause", "fix")])
    assert not sick.healthy
    text = sick.summary()
    assert text.index("non-finite") < text.index("dead-relu")  # most severe first
    assert "fix:" in text and "cause:" in text
    files = sick.write(str(tmp_path))
    data = json.loads((tmp_path / "doctor.json").read_text())
    assert [f["id"] for f in data["findings"]] == ["non-finite", "dead-relu"]
    assert "dead-relu" in (tmp_path / "doctor.md").read_text()
    assert "png" not in files  # no trace, no figure
    order = [f.severity for f in sort_findings(sick.findings + report.findings)]
    assert order == ["error", "warning", "info"]


# --- the monitor on a hand-written loop ------------------------------------------

def _hand_loop(model, x, y, steps, monitor=None, lr=0.1, batch=32, loss="cross_entropy"):
    loss = nnx.get_loss(loss)
    opt = nnx.SGD(lr)
    backend = model.backend
    xd = backend.asarray(x, "float32")
    yd = backend.asarray(y, "int64")
    xp = backend.xp
    if monitor is not None:
        monitor.attach(model)
    for step in range(steps):
        start = (step * batch) % (x.shape[0] - batch + 1)
        idx = backend.asarray(np.arange(start, start + batch), "int64")
        xb, yb = xp.take(xd, idx, axis=0), xp.take(yd, idx, axis=0)
        if monitor is not None:
            monitor.begin_step(step)
        out, backward = model.forward(xb, train=True)
        value, dout = loss(out, yb)
        backward(dout, need_dx=False)
        if monitor is not None:
            monitor.after_backward(step)
        opt.step(model)
        if monitor is not None:
            monitor.after_update(step, value, opt.lr)
    if monitor is not None:
        monitor.flush()
        monitor.detach()
    return model


def test_monitor_leaves_training_unchanged():
    x, y = blobs(256)
    plain = _hand_loop(nnx.mlp([2, 16, 16, 3], activation="tanh").init("cpu", 0), x, y, 25)
    mon = Monitor(every=3)
    watched = nnx.mlp([2, 16, 16, 3], activation="tanh").init("cpu", 0)
    _hand_loop(watched, x, y, 25, mon)
    for k, v in plain.get_weights().items():
        np.testing.assert_array_equal(v, watched.get_weights()[k], err_msg=k)
    assert all("forward" not in la.__dict__ for la in watched.layers)  # wrappers removed
    assert mon.trace.n_steps == 25
    assert mon.trace.sample_steps.tolist() == list(range(10)) + [12, 15, 18, 21, 24]


def test_monitor_statistics_match_numpy():
    x, y = blobs(64, d=4)
    model = nnx.mlp([4, 8, 3], activation="sigmoid").init("cpu", 1)
    w = model.get_weights()
    mon = Monitor(every=1)
    _hand_loop(model, x, y, 1, mon, batch=64)
    z = x @ w["dense_0.w"] + w["dense_0.b"]
    a = 1 / (1 + np.exp(-z))
    got = mon.trace.act[0, 0]
    np.testing.assert_allclose(got[:4], [z.mean(), z.std(), a.mean(), a.std()], rtol=1e-4,
                               atol=1e-6)
    assert got[4] == pytest.approx(np.mean((a <= 0.01) | (a >= 0.99)))
    assert not mon.trace.layers[0].can_die.any()  # sigmoid units cannot die
    assert mon.trace.params == [("dense_0", "w"), ("dense_2", "w")]  # weight matrices only
    # gradient norm of dense_0.w from the same batch
    loss = nnx.get_loss("cross_entropy")
    out = a @ w["dense_2.w"] + w["dense_2.b"]
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dout = (p - np.eye(3)[y]) / 64
    dz = dout @ w["dense_2.w"].T * a * (1 - a)
    j = mon.trace.params.index(("dense_0", "w"))
    assert mon.trace.grad_norm[0, j] == pytest.approx(np.linalg.norm(x.T @ dz), rel=1e-4)
    assert mon.trace.weight_norm[0, j] == pytest.approx(np.linalg.norm(w["dense_0.w"]),
                                                        rel=1e-5)
    assert loss.name == "softmax_cross_entropy"


def test_update_norms_of_large_matrices_come_from_a_strided_sample():
    from nnx.doctor.monitor import UPDATE_SAMPLE, update_stride

    for shape in [(784, 512), (512, 256), (3, 3, 32, 64), (4096,), (64, 64)]:
        stride = update_stride(shape)
        n = int(np.prod(shape))
        assert len(range(0, n, stride)) <= UPDATE_SAMPLE or stride == 1
        assert stride == 1 if n <= UPDATE_SAMPLE else np.gcd(stride, shape[-1]) == 1
    # plain SGD: each update is exactly lr * gradient, so its norm is lr * ||g||
    x, y = blobs(256)
    model = nnx.mlp([2, 256, 128, 3]).init("cpu", 0)  # a 256 x 128 matrix: sampled
    mon = Monitor(every=1)
    _hand_loop(model, x, y, 12, mon, lr=0.1)
    ratio = mon.trace.update_norm / (0.1 * mon.trace.grad_norm)
    assert update_stride((256, 128)) > 1 and update_stride((128, 3)) == 1
    np.testing.assert_allclose(ratio[:, 1], 1.0, rtol=0.1)  # the sampled matrix
    np.testing.assert_allclose(ratio[:, [0, 2]], 1.0, rtol=1e-3)  # every entry


def test_monitor_reads_the_host_only_at_flushes():
    reads = []
    base = backends.get("numpy")
    counting = dataclasses.replace(base, label="numpy-counting",
                                   _to_numpy=lambda a: reads.append(1) or np.array(a))
    x, y = blobs(512)
    model = nnx.mlp([2, 32, 3]).init(counting, 0)
    mon = Monitor(every=5, flush_every=100)
    _hand_loop(model, x, y, 300, mon)
    # 3 flushes during training + 1 at the end, each at most 3 transfers
    assert mon.reads <= 8
    assert len(reads) <= 12
    assert mon.trace.n_steps == 300 and mon.trace.sample_steps.size == 60 + 8


def test_monitor_on_a_non_default_device():
    pytest.importorskip("array_api_strict")
    x, y = blobs(128)
    model = nnx.mlp([2, 8, 3], activation="mixed:relu,tanh").init("strict:device1", 0)
    mon = Monitor(every=2)
    _hand_loop(model, x, y, 10, mon)
    assert np.isfinite(mon.trace.act[:, 0, :4]).all()
    assert mon.trace.layers[0].can_die.sum() == 4 and mon.trace.layers[0].saturates.sum() == 4
    assert np.isfinite(mon.trace.grad_norm).all()


# --- checks before training ------------------------------------------------------

def test_output_loss_mismatch():
    x, y = blobs(100)
    relu_out = nnx.mlp([2, 8, 3], output="relu").init("cpu", 0)
    f = by_id(check(relu_out, "cross_entropy", x, y), "output-loss-mismatch")
    assert f.severity == "error" and f.layers == ["dense_2"] and "relu" in f.title
    sig_out = nnx.mlp([2, 8, 3], output="sigmoid").init("cpu", 0)
    assert "output-loss-mismatch" in ids(check(sig_out, "cross_entropy", x, y))
    one = nnx.mlp([2, 8, 1]).init("cpu", 0)
    assert "output-loss-mismatch" in ids(check(one, "cross_entropy"))
    ten = nnx.mlp([2, 8, 10]).init("cpu", 0)
    yy = np.arange(100) % 10
    f = by_id(check(ten, "bce", x, yy), "output-loss-mismatch")
    assert "10-class" in f.title
    assert not ids(check(nnx.mlp([2, 8, 3]).init("cpu", 0), "cross_entropy", x, y), "warning")


def test_bounded_regression_output():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)).astype(np.float32)
    y = (x @ np.array([[3.0], [2.0], [1.0]])).astype(np.float32)  # unbounded, |y| > 1
    model = nnx.mlp([3, 8, 1], output="tanh").init("cpu", 0)
    f = by_id(check(model, "mse", x, y), "bounded-regression-output")
    assert f.severity == "error" and f.layers == ["dense_2"]
    assert "bounded-regression-output" not in ids(
        check(nnx.mlp([3, 8, 1]).init("cpu", 0), "mse", x, y))


def test_input_scaling():
    x, y = blobs(300, d=6)
    model = nnx.mlp([6, 8, 3]).init("cpu", 0)
    pixels = (np.clip(x * 40 + 120, 0, 255)).astype(np.float32)
    f = by_id(check(model, "cross_entropy", pixels, y), "unscaled-inputs")
    assert "255" in f.fix
    mixed = x.copy()
    mixed[:, 0] *= 1e4
    mixed[:, 1] *= 1e-2
    assert "feature-scale-spread" in ids(check(model, "cross_entropy", mixed / 1e4, y))
    assert not ids(check(model, "cross_entropy", x, y), "warning")


def test_labels_and_imbalance():
    x, y = blobs(300)
    model = nnx.mlp([2, 8, 3]).init("cpu", 0)
    f = by_id(check(model, "cross_entropy", x, y + 1), "labels-out-of-range")
    assert "subtract 1" in f.title or "0..2" in f.title
    assert "labels-out-of-range" in ids(check(model, "cross_entropy", x, y + 0.5))
    keep = (y != 2) | (np.arange(300) % 25 == 0)
    f = by_id(check(model, "cross_entropy", x[keep], y[keep]), "class-imbalance")
    assert f.severity == "warning" and f.evidence["ratio"] >= 10


def test_leakage():
    x, y = blobs(300)
    model = nnx.mlp([2, 8, 3]).init("cpu", 0)
    f = by_id(check(model, "cross_entropy", x[:250], y[:250],
                    validation_data=(x[200:], y[200:])), "train-test-leakage")
    assert f.evidence["duplicates"] == 50 and f.severity == "warning"
    assert "train-test-leakage" not in ids(check(model, "cross_entropy", x[:250], y[:250],
                                                 test_data=(x[250:], y[250:])))


def test_symmetric_units_from_zero_and_constant_init():
    x, y = blobs(100)
    zero = nnx.mlp([2, 8, 8, 3], init="zeros").init("cpu", 0)
    f = by_id(check(zero, "cross_entropy", x, y), "symmetric-units")
    assert f.severity == "error" and f.layers[0] == "dense_0"
    const = nnx.mlp([2, 8, 3], init="constant:0.5").init("cpu", 0)
    assert by_id(check(const, "cross_entropy"), "symmetric-units").layers[0] == "dense_0"
    assert "symmetric-units" not in ids(check(nnx.mlp([2, 8, 8, 3]).init("cpu", 0),
                                              "cross_entropy"))


def test_derivative_mismatch_custom_activation_and_gradcheck():
    def fwd(z):
        from array_api_compat import array_namespace

        return array_namespace(z).tanh(z)

    def wrong(*, z, a):
        return 1.0 - z * z  # uses z where the formula needs a: 1 - tanh(z)^2

    act = nnx.define_activation("bad_tanh", fwd, wrong, family="tanh", check=False,
                                register=False)
    x, y = blobs(40)
    model = nnx.Sequential([nnx.Dense(2, 4), nnx.ActivationLayer(act),
                            nnx.Dense(4, 3)]).init("cpu", 0)
    f = by_id(check(model, "cross_entropy", x, y), "derivative-mismatch")
    assert f.layers == ["activationlayer_1"] and f.severity == "error"
    # through a whole-model gradient check as well
    from nnx.doctor import findings_from_gradcheck

    report = nnx.gradcheck(model, "cross_entropy", x[:4], y[:4])
    g = findings_from_gradcheck(report)
    assert g and g[0].id == "derivative-mismatch" and "dense_0" in g[0].layers


def test_run_detectors_on_an_empty_trace():
    from nnx.doctor import Trace

    assert run_detectors(Trace()) == []


# --- the doctor's files, backends and command line --------------------------------

def test_doctor_writes_its_files_and_survives_a_non_finite_stop(tmp_path, capsys):
    x, y = blobs(300)
    doctor = Doctor(out_dir=str(tmp_path))
    trainer = Trainer(nnx.mlp([2, 32, 3]), optimizer="momentum", lr=50.0, callbacks=[doctor])
    with pytest.raises(nnx.NonFiniteError):
        trainer.fit(x, y, epochs=3, batch_size=32)
    report = doctor.report
    assert "non-finite" in report.ids("error")
    assert "NonFiniteError" in report.trace.meta["stopped_by"]
    for name in ("doctor.json", "doctor.md", "doctor.png"):
        assert (tmp_path / name).stat().st_size > 200, name
    data = json.loads((tmp_path / "doctor.json").read_text())
    assert data["healthy"] is False and data["loss"]["steps"][0] == 0
    assert "dense_0.w" in data["series"]["params"]
    assert "non-finite" in capsys.readouterr().out  # the summary is printed


def test_duplicate_rows():
    from nnx.doctor import duplicate_rows

    a = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=np.float32)
    b = np.array([[2.0, 3.0], [-0.0, 1.0], [2.0, 3.5]], dtype=np.float32)
    assert duplicate_rows(a, b).tolist() == [True, True, False]
    assert not duplicate_rows(a, np.zeros((2, 3))).any()


def test_doctor_on_every_backend(backend):
    x, y = blobs(320)
    model = nnx.mlp([2, 16, 3]).init(backend, 0)
    with_weights(model, lambda w: w["dense_0.b"].__setitem__(slice(0, 8), -100.0))
    doctor = Doctor(verbose=False)
    Trainer(model, optimizer="sgd", lr=0.1, device=backend, callbacks=[doctor]).fit(
        x, y, epochs=4, batch_size=32)
    report = doctor.report
    assert report.trace.n_steps == 40 and report.trace.meta["device"] == backend.label
    f = by_id(report.findings, "dead-relu")
    assert f.layers == ["dense_0"] and f.evidence["dense_0"]["dead_units"] >= 8
    assert np.isfinite(report.trace.grad_norm).all()


def test_command_line_doctor_and_lr_find(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), "--doctor", "--lr-find", "--epochs", "2", "--hidden",
         "16", "--device", "cpu", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("doctor.json", "doctor.md", "doctor.png", "lr_find.png"):
        assert (out / name).exists(), name
    data = json.loads((out / "doctor.json").read_text())
    assert data["run"]["n_train"] > 0 and data["loss"]["values"]
    assert "lr range test" in proc.stderr


def test_data_checks_are_remembered_per_data_set(monkeypatch):
    from nnx.doctor import static

    x, y = blobs(300, d=6)
    pixels = (np.clip(x * 40 + 120, 0, 255)).astype(np.float32)
    model = nnx.mlp([6, 8, 3]).init("cpu", 0)
    first = static.check_data(model, "cross_entropy", pixels, y)
    first[0].severity = "info"  # a report may lower a finding: the remembered one stays
    calls = []
    monkeypatch.setattr(static, "_data_findings", lambda *a: calls.append(a) or [])
    again = static.check_data(model, "cross_entropy", pixels, y)
    assert not calls and [f.id for f in again] == ["unscaled-inputs"]
    assert again[0].severity == "warning"
    pixels /= 255.0  # changed in place: checked again
    static.check_data(model, "cross_entropy", pixels, y)
    assert len(calls) == 1
    static.clear_data_checks()  # as in a new process: read again
    static.check_data(model, "cross_entropy", pixels, y)
    assert len(calls) == 2


def test_the_doctor_times_itself():
    x, y = blobs(300)
    doctor = Doctor(verbose=False, verify_fixes=True)
    trainer = Trainer(nnx.mlp([2, 16, 3]), optimizer="sgd", lr=0.1, callbacks=[doctor])
    start = time.perf_counter()
    trainer.fit(x, y, epochs=3, batch_size=32)
    elapsed = time.perf_counter() - start
    seconds = doctor.seconds
    assert set(seconds) == {"checks", "monitor", "report", "verify"}
    assert seconds["checks"] > 0 and seconds["monitor"] > 0 and seconds["report"] > 0
    assert seconds["verify"] == 0 and not doctor.report.trials  # healthy: nothing to try
    assert sum(seconds.values()) < elapsed
    sick = Doctor(verbose=False, verify_fixes=True)  # lr 50 diverges: fixes are tried
    with pytest.raises(nnx.NonFiniteError):
        Trainer(nnx.mlp([2, 32, 3]), optimizer="momentum", lr=50.0, callbacks=[sick]).fit(
            x, y, epochs=3, batch_size=32)
    assert sick.report.trials and sick.seconds["verify"] > 0
