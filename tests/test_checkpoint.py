"""Models and checkpoints on disk: round trips across backends, exact resume, damage, mismatch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.checkpoint import (
    NonFiniteWeights,
    load,
    load_checkpoint,
    model_is_finite,
    save,
    save_checkpoint,
)
from nnx.errors import CheckpointError
from nnx.train import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    Trainer,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data():
    return nnx.data.spirals(n=300, seed=2)


def _available(device):
    try:
        return backends.get(device)
    except backends.BackendUnavailable:
        return None


# --- models ------------------------------------------------------------------------


def test_save_and_load_across_backends(tmp_path, data):
    tr = Trainer(nnx.mlp([2, 16, 3], batchnorm=True, dropout=0.2), lr=0.01)
    tr.fit(data.x_train, data.y_train, epochs=2, batch_size=32)
    path = tmp_path / "model.npz"
    save(tr.model, path)
    expected = tr.predict_proba(data.x_test)
    chain = [d for d in ("numpy", "strict:device1", "torch") if _available(d)]
    model = tr.model
    for device in chain:  # numpy -> strict -> torch, each loading what the previous saved
        model = load(path, device=device)
        assert model.backend.label == device and model.config() == tr.model.config()
        for k, v in tr.model.get_weights().items():  # BatchNorm statistics included
            np.testing.assert_array_equal(model.get_weights()[k], v, err_msg=k)
        out = Trainer(model, device=device).predict_proba(data.x_test)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        save(model, path)
    # loaded with pickle disabled: the file is a plain .npz of arrays
    with np.load(path, allow_pickle=False) as z:
        assert "__meta__" in z.files and "param/dense_0.w" in z.files


def test_load_in_another_dtype(tmp_path):
    model = nnx.mlp([3, 4, 2]).init("numpy", 0, "float64")
    save(model, tmp_path / "m.npz")
    assert load(tmp_path / "m.npz").dtype == "float64"
    m32 = load(tmp_path / "m.npz", dtype="float32")
    assert m32.get_weights()["dense_0.w"].dtype == np.float32


def test_save_refuses_a_nonfinite_model_and_keeps_the_old_file(tmp_path):
    model = nnx.mlp([3, 4, 2]).init("numpy", 0)
    path = tmp_path / "m.npz"
    save(model, path)
    before = path.read_bytes()
    w = model.get_weights()
    w["dense_2.b"][1] = np.nan
    model.set_weights(w)
    assert not model_is_finite(model)
    with pytest.raises(NonFiniteWeights, match="dense_2.b holds NaN"):
        save(model, path)
    assert path.read_bytes() == before
    save(model, tmp_path / "nan.npz", allow_nonfinite=True)
    with pytest.raises(CheckpointError, match="NaN or infinite values in dense_2.b.*"
                                              "allow_nonfinite=True"):
        load(tmp_path / "nan.npz")  # a model that predicts NaN is refused, unless asked for
    assert np.isnan(load(tmp_path / "nan.npz", allow_nonfinite=True).get_weights()
                    ["dense_2.b"][1])


def test_writes_are_atomic_even_when_the_process_is_killed(tmp_path):
    path = tmp_path / "m.npz"
    save(nnx.mlp([3, 4, 2]).init("numpy", 0), path)
    good = path.read_bytes()
    code = ("import nnx; nnx.save(nnx.mlp([3, 64, 2]).init('numpy', 1), "
            f"{str(path)!r}); print('saved')")
    env = {**os.environ, "NNX_TEST_SLOW_WRITE": "30", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    def written():  # the temporary file (.m.npz.tmp-PID.XXXXXXXX) whole, not renamed yet
        return any(t.stat().st_size > len(good) for t in tmp_path.glob(f".m.npz.tmp-{proc.pid}.*"))

    try:
        deadline = time.monotonic() + 60
        while not written():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert path.read_bytes() == good  # the old model is intact
    load(path)


# --- damage and mismatch -----------------------------------------------------------


def _checkpoint(tmp_path, data, sizes=(2, 8, 3), **kw):
    tr = Trainer(nnx.mlp(list(sizes)), lr=0.01, **kw)
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=64)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, tr)
    return path, tr


def test_damaged_files_raise_checkpoint_error(tmp_path, data):
    path, _ = _checkpoint(tmp_path, data)
    blob = path.read_bytes()
    bad = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    variants = [blob[:n] for n in (0, 10, 100, len(blob) // 2, len(blob) - 30, len(blob) - 1)]
    for _ in range(12):  # flipped bytes
        b = bytearray(blob)
        for i in rng.integers(0, len(b), 3):
            b[i] ^= 0xFF
        variants.append(bytes(b))
    variants.append(b"not a checkpoint at all")
    damaged = 0
    for v in variants:
        bad.write_bytes(v)
        try:
            load_checkpoint(bad)
        except CheckpointError as exc:
            damaged += 1
            assert str(bad) in str(exc)
        # any other exception type fails the test; a flip inside padding may go unnoticed
    assert damaged >= len(variants) - 3
    for n in (0, 100, len(blob) // 2, len(blob) - 1):
        bad.write_bytes(blob[:n])
        with pytest.raises(CheckpointError, match="damaged.*Use an earlier checkpoint"):
            load_checkpoint(bad)
        with pytest.raises(CheckpointError, match="damaged"):
            load(bad)


def test_not_a_checkpoint(tmp_path, data):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an nnx model"):
        load(tmp_path / "other.npz")
    with pytest.raises(CheckpointError, match="no model or checkpoint"):
        load(tmp_path / "missing.npz")
    save(nnx.mlp([2, 8, 3]).init("numpy", 0), tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="saved model, not a checkpoint"):
        Trainer(nnx.mlp([2, 8, 3])).fit(data.x_train, data.y_train, epochs=2,
                                        resume=tmp_path / "model.npz")


def test_a_checkpoint_from_another_architecture_names_the_layer(tmp_path, data):
    path, _ = _checkpoint(tmp_path, data, sizes=(2, 8, 3))
    cases = [(nnx.mlp([2, 16, 3]), r"layer 0 \(dense_0\) is Dense\(n_in=2, n_out=8.* but "
                                   r"Dense\(n_in=2, n_out=16"),
             (nnx.mlp([2, 8, 3], activation="tanh"), r"layer 1 \(activationlayer_1\)"),
             (nnx.mlp([2, 8, 8, 3]), r"layer 2 \(dense_2\)")]
    for model, match in cases:
        with pytest.raises(CheckpointError, match=match):
            Trainer(model).fit(data.x_train, data.y_train, epochs=2, resume=path)


def test_a_checkpoint_of_another_optimizer_is_refused(tmp_path, data):
    path, _ = _checkpoint(tmp_path, data)
    with pytest.raises(CheckpointError, match="optimizer state is for 'adam'"):
        Trainer(nnx.mlp([2, 8, 3]), optimizer="sgd").fit(data.x_train, data.y_train, epochs=2,
                                                          batch_size=64, resume=path)


# --- exact resume ---------------------------------------------------------------------


def _resumable(sizes=(2, 32, 32, 3)):
    model = nnx.mlp(list(sizes), dropout=0.3)
    # min_delta so large that only the first epoch counts as an improvement: the counters
    # (and the learning rate, halved at the third epoch) depend on every epoch seen
    callbacks = [EarlyStopping("val_loss", patience=50, min_delta=10.0),
                 ReduceLROnPlateau(patience=2, min_delta=10.0)]
    return Trainer(model, "cross_entropy", "adam", lr=0.01, seed=11), callbacks


def _fit(tr, data, epochs, callbacks, **kw):
    return tr.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32,
                  validation_split=0.2, callbacks=callbacks, **kw)


def test_resume_after_an_epoch_is_bitwise_equal_on_numpy(tmp_path, data):
    straight, cbs = _resumable()
    _fit(straight, data, 4, cbs)

    first, cbs1 = _resumable()
    path = tmp_path / "ckpt.npz"
    _fit(first, data, 2, cbs1 + [ModelCheckpoint(path)])
    resumed, cbs2 = _resumable()
    h = _fit(resumed, data, 4, cbs2, resume=path)

    assert resumed.step == straight.step and len(h) == 4
    for k, v in straight.model.get_weights().items():
        np.testing.assert_array_equal(resumed.model.get_weights()[k], v, err_msg=k)
    for key, values in straight.history.history.items():
        if key != "time":
            assert h[key] == values, key
    assert len(set(h["lr"])) == 2 and cbs[0].wait == 3
    assert (cbs2[0].wait, cbs2[0].best) == (cbs[0].wait, cbs[0].best)
    assert cbs2[1].wait == cbs[1].wait
    assert resumed.optimizer.t == straight.optimizer.t


def test_resume_inside_an_epoch_is_bitwise_equal_on_numpy(tmp_path, data):
    straight, cbs = _resumable()
    _fit(straight, data, 3, cbs)

    class Interrupt(Callback):  # as Ctrl-C in the command line does
        def on_step_end(self, trainer, state):
            if state.step == 8:  # inside the second epoch (6 steps per epoch)
                trainer.request_interrupt()

    first, cbs1 = _resumable()
    _fit(first, data, 3, cbs1 + [Interrupt()])
    assert first.interrupted_at["epoch"] == 1 and first.interrupted_at["batch"] == 3
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, first)
    resumed, cbs2 = _resumable()
    h = _fit(resumed, data, 3, cbs2, resume=path)
    for k, v in straight.model.get_weights().items():
        np.testing.assert_array_equal(resumed.model.get_weights()[k], v, err_msg=k)
    assert len(h) == 3 and h["loss"][1:] == pytest.approx(straight.history["loss"][1:],
                                                          rel=1e-6)


def test_resume_with_a_schedule_continues_the_schedule(tmp_path, data):
    sched = nnx.schedules.Cosine(0.05, total_steps=40)

    def run(epochs, **kw):
        tr = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.05, momentum=0.9), seed=1)
        lrs = []

        class Record(Callback):
            def on_backward_end(self, trainer, state):
                lrs.append(trainer.optimizer.lr)

        tr.fit(data.x_train, data.y_train, epochs=epochs, batch_size=60,
               callbacks=[LearningRateScheduler(sched), Record(), *kw.pop("cbs", [])], **kw)
        return tr, lrs

    straight, lrs = run(4)
    path = tmp_path / "c.npz"
    run(2, cbs=[ModelCheckpoint(path)])
    resumed, lrs2 = run(4, resume=path)
    assert lrs2 == lrs[len(lrs) - len(lrs2):] and lrs == [sched(s) for s in range(len(lrs))]
    for k, v in straight.model.get_weights().items():
        np.testing.assert_array_equal(resumed.model.get_weights()[k], v)


class _Peek(Callback):
    def on_train_begin(self, trainer):
        self.weights = trainer.model.get_weights()


def test_resume_on_another_backend_continues_from_the_same_weights(tmp_path, data):
    path, tr = _checkpoint(tmp_path, data)
    for device in ("strict:device1", "torch"):
        if not _available(device):
            continue
        other = Trainer(nnx.mlp([2, 8, 3]), device=device, lr=0.01)
        peek = _Peek()
        h = other.fit(data.x_train, data.y_train, epochs=2, batch_size=64, resume=path,
                      callbacks=[peek])
        for k, v in tr.model.get_weights().items():
            np.testing.assert_array_equal(peek.weights[k], v)
        assert len(h) == 2 and h["epoch"] == [1, 2]


def test_resume_with_other_data_is_refused_unless_forced(tmp_path, data):
    path, _ = _checkpoint(tmp_path, data)
    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    with pytest.raises(CheckpointError, match="trained on other data .*240 examples.* than "
                                              "this run's .*100 examples.*force-resume"):
        tr.fit(data.x_train[:100], data.y_train[:100], epochs=2, batch_size=64, resume=path)
    assert tr.step == 0
    with pytest.warns(UserWarning, match="will not match an uninterrupted run"):
        tr.fit(data.x_train[:100], data.y_train[:100], epochs=2, batch_size=64, resume=path,
               force_resume=True)


def test_checkpoint_holds_what_a_resume_needs(tmp_path, data):
    path, tr = _checkpoint(tmp_path, data, sizes=(2, 8, 3))
    ck = load_checkpoint(path)
    meta = ck["meta"]
    assert meta["epoch"] == 1 and meta["step"] == tr.step
    assert meta["rng"] == tr.rng.bit_generator.state
    assert meta["history"]["loss"] == tr.history["loss"]
    assert ck["optimizer"]["t"] == tr.optimizer.t and "dense_0.w/m" in ck["optimizer"]
    assert set(ck["params"]) == set(tr.model.get_weights())


def test_model_checkpoint_keeps_the_last_good_file(tmp_path, data):
    path = tmp_path / "ckpt.npz"

    class Break(Callback):  # the model goes bad at the end of the second epoch
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                w = trainer.model.get_weights()
                w["dense_0.w"][0, 0] = np.inf
                trainer.model.set_weights(w)

    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    with pytest.warns(UserWarning, match="not saving epoch 2: dense_0.w holds NaN or infinite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tr.fit(data.x_train, data.y_train, epochs=2, batch_size=64,
                   callbacks=[ModelCheckpoint(path), Break()])
    assert load_checkpoint(path)["meta"]["epoch"] == 1
    assert model_is_finite(load(path))
    # the training error names that file
    with pytest.raises(nnx.NonFiniteError, match=f"last good checkpoint is {path}"), \
            pytest.warns(UserWarning, match="not saving epoch 2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tr.fit(data.x_train, data.y_train, epochs=3, batch_size=64, resume=path,
                   callbacks=[ModelCheckpoint(path), Break()])


def test_checkpoint_files_are_npz_without_pickle(tmp_path, data):
    path, _ = _checkpoint(tmp_path, data)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert "__meta__.npy" in names and all(n.endswith(".npy") for n in names)
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


# --- the trainer's own state ----------------------------------------------------------


def _interrupted_at_step(data, step):
    class Interrupt(Callback):
        def on_step_end(self, trainer, state):
            if state.step == step:
                trainer.request_interrupt()

    first, cbs = _resumable()
    _fit(first, data, 3, cbs + [Interrupt()])
    return first


def _history(h):
    return {k: v for k, v in h.history.items() if k != "time"}


def test_resume_from_a_state_dict_in_memory_equals_resume_from_its_file(tmp_path, data):
    state = _interrupted_at_step(data, 8).state_dict()
    assert state["meta"]["resume_point"]["batch"] == 3
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, state)  # a state dict is written as the trainer itself would be
    runs = []
    for resume in (state, path, state):  # the state is not changed by resuming from it
        tr, cbs = _resumable()
        h = _fit(tr, data, 3, cbs, resume=resume)
        runs.append((tr.step, tr.model.get_weights(), _history(h), cbs[0].wait))
    for step, weights, history, wait in runs[1:]:
        assert (step, history, wait) == runs[0][0:1] + runs[0][2:]
        for k, v in runs[0][1].items():
            np.testing.assert_array_equal(weights[k], v, err_msg=k)


def test_a_state_dict_round_trips_through_a_checkpoint_file(tmp_path, data):
    tr = _interrupted_at_step(data, 4)
    state = tr.state_dict()
    save_checkpoint(tmp_path / "a.npz", tr)
    ck = load_checkpoint(tmp_path / "a.npz")
    assert set(ck) == set(state) == {"meta", "params", "optimizer", "callbacks"}
    assert {k: ck["meta"][k] for k in state["meta"]} == state["meta"]
    for part in ("params", "optimizer"):
        assert set(ck[part]) == set(state[part])
        for k, v in state[part].items():
            np.testing.assert_array_equal(ck[part][k], v, err_msg=f"{part} {k}")
    assert {k: {n: v for n, v in s.items() if n != "arrays"} for k, s in ck["callbacks"].items()} \
        == {k: {n: v for n, v in s.items() if n != "arrays"} for k, s in state["callbacks"].items()}
    # a trainer that loaded a state gives that state back, resume point included
    back, cbs = _resumable()
    back.active_callbacks = cbs
    back.load_state_dict(ck, source="a.npz")
    again = back.state_dict()
    assert again["meta"] == state["meta"] and again["meta"]["resume_point"]["batch"] == 5
    assert again["callbacks"].keys() == state["callbacks"].keys()


def _snapshot(tr):
    return (tr.step, tr.completed_epochs, tr.history.to_dict(), tr.rng.bit_generator.state,
            tr.optimizer.t, {k: v.copy() for k, v in tr.model.get_weights().items()})


def _unchanged(tr, before):
    after = _snapshot(tr)
    assert after[:5] == before[:5]
    for k, v in before[5].items():
        np.testing.assert_array_equal(after[5][k], v, err_msg=k)


@pytest.mark.parametrize("damage", [
    ("epoch", "3"), ("step", -1), ("rng", {"bit_generator": "PCG64"}), ("rng", None),
    ("history", {"loss": 0.5}), ("resume_point", {"batch": -2, "seen": 0}),
    ("resume_point", {"batch": 1, "seen": 64, "sums": {"loss": "x"}}),
    ("resume_point", {"batch": 99, "seen": 64, "sums": {}}),
])
def test_a_refused_state_changes_nothing(tmp_path, data, damage):
    path, _ = _checkpoint(tmp_path, data)
    state = load_checkpoint(path)
    key, value = damage
    state["meta"][key] = value
    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01, seed=5)
    tr.fit(data.x_train, data.y_train, epochs=1, batch_size=64)
    before = _snapshot(tr)
    with pytest.raises(CheckpointError, match=f"damaged: its '{key}"):
        tr.fit(data.x_train, data.y_train, epochs=3, batch_size=64, resume=state)
    _unchanged(tr, before)


def test_a_state_of_another_optimizer_or_model_changes_nothing(tmp_path, data):
    path, _ = _checkpoint(tmp_path, data)
    for tr, match in [(Trainer(nnx.mlp([2, 8, 3]), optimizer="sgd", lr=0.01), "'adam'"),
                      (Trainer(nnx.mlp([2, 8, 3]), lr=0.01), "no entry 'dense_2.b'")]:
        state = load_checkpoint(path)
        if "entry" in match:  # a weight missing from the file
            del state["params"]["dense_2.b"]
        before = _snapshot(tr)
        with pytest.raises(CheckpointError, match=match):
            tr.load_state_dict(state, source=str(path))
        _unchanged(tr, before)


def test_checkpoint_module_packs_files_and_never_imports_the_trainer():
    import ast

    source = (ROOT / "nnx" / "checkpoint.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [m for m in imported if "train" in m.split(".")], imported
    # nor does it reach into a trainer: the state is the trainer's to give and to take back
    assert "trainer._" not in source and "trainer.rng" not in source
