"""The Trainer as a user drives it: accuracy floors, batching, callbacks, host reads, NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.errors import NonFiniteError
from nnx.train import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ReduceLROnPlateau,
    Trainer,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def blobs():
    return nnx.data.blobs(n=300, classes=3, seed=2)


def _fit_quiet(trainer, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer.fit(*args, **kwargs)


# --- learning and accuracy floors ---------------------------------------------------------


def test_fit_reduces_the_loss(blobs):
    tr = Trainer(nnx.mlp([2, 16, 3]), "cross_entropy", "adam", lr=0.01, seed=1)
    h = tr.fit(blobs.x_train, blobs.y_train, epochs=5, batch_size=32)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > h["accuracy"][0]


def test_spirals_accuracy_floor():
    ds = nnx.data.spirals()
    tr = Trainer(nnx.mlp([2, 64, 64, 3]), "cross_entropy", nnx.Adam(0.01), seed=0)
    tr.fit(ds.x_train, ds.y_train, epochs=60, batch_size=32)
    assert tr.evaluate(ds.x_test, ds.y_test)["accuracy"] >= 0.97


def test_digits_accuracy_floor_with_the_command_line_defaults():
    ds = nnx.data.load("digits")
    tr = Trainer(nnx.mlp([64, 256, 128, 10]), "cross_entropy", nnx.Adam(1e-3), seed=0)
    h = tr.fit(ds.x_train, ds.y_train, epochs=30, batch_size=64, validation_split=0.1)
    assert h["val_accuracy"][-1] > 0.9
    assert tr.evaluate(ds.x_test, ds.y_test)["accuracy"] >= 0.95


def test_full_batch_and_mini_batch_step_counts(blobs):
    n = len(blobs.x_train)
    full = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.5), seed=0)
    h = full.fit(blobs.x_train, blobs.y_train, epochs=20, batch_size="full")
    assert full.step == 20 and full.batch_size == n
    assert h["loss"][-1] < h["loss"][0]
    mini = Trainer(nnx.mlp([2, 8, 3]), optimizer=nnx.SGD(0.5), seed=0)
    mini.fit(blobs.x_train, blobs.y_train, epochs=2, batch_size=50)
    assert mini.step == 2 * -(-n // 50)


def test_validation_split_is_stratified():
    y = np.repeat(np.arange(4), [40, 80, 120, 160])
    x = np.random.default_rng(0).normal(size=(len(y), 3)).astype(np.float32)
    tr = Trainer(nnx.mlp([3, 4, 4]), seed=0)
    tr.fit(x, y, epochs=1, batch_size=64, validation_split=0.25)
    _, yv = tr.validation_data
    assert np.bincount(yv, minlength=4).tolist() == [10, 20, 30, 40]
    assert len(tr.y_train) + len(yv) == len(y)


@pytest.mark.parametrize("device", ["strict:device1", "torch"])
def test_the_loop_runs_on_other_backends(device, blobs):
    try:
        b = backends.get(device)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    tr = Trainer(nnx.mlp([2, 16, 3], dropout=0.1), optimizer="adam", lr=0.01, device=b, seed=0)
    h = tr.fit(blobs.x_train, blobs.y_train, epochs=3, batch_size=32,
               validation_data=(blobs.x_test, blobs.y_test))
    assert h["loss"][-1] < h["loss"][0] and h["val_accuracy"][-1] > 0.8
    w = tr.model.layers[0].params["w"]
    assert w.device == b.device


# --- callbacks ------------------------------------------------------------------------------


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(("epoch_begin", epoch))

    def on_backward_end(self, trainer, state):
        self.events.append(("backward_end", state.step))

    def on_step_end(self, trainer, state):
        self.events.append(("step_end", state.step))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, trainer):
        self.events.append("train_end")


def test_callbacks_fire_in_order():
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    y = np.arange(10) % 2
    rec = _Recorder()
    Trainer(nnx.mlp([2, 4, 2])).fit(x, y, epochs=2, batch_size=5, callbacks=[rec])
    expected = ["train_begin"]
    step = 0
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for _ in range(2):
            expected += [("backward_end", step), ("step_end", step)]
            step += 1
        expected.append(("epoch_end", epoch))
    expected.append("train_end")
    assert rec.events == expected


def test_early_stopping_restores_the_best_weights(blobs):
    class Spoil(Callback):  # keeps the weights of every epoch
        def __init__(self):
            self.weights = {}

        def on_epoch_end(self, trainer, epoch, logs):
            self.weights[epoch] = trainer.model.get_weights()

    spoil = Spoil()
    tr = Trainer(nnx.mlp([2, 16, 3]), optimizer=nnx.SGD(0.05), seed=0)
    stop = EarlyStopping("val_loss", patience=2)

    class Worsen(Callback):  # from epoch 3 on, each epoch starts from scrambled weights
        def on_epoch_begin(self, trainer, epoch):
            if epoch >= 3:
                rng = np.random.default_rng(epoch)
                trainer.model.set_weights({k: 20 * rng.standard_normal(v.shape).astype(v.dtype)
                                           for k, v in trainer.model.get_weights().items()})

    h = _fit_quiet(tr, blobs.x_train, blobs.y_train, epochs=30, batch_size=16,
                   validation_data=(blobs.x_test, blobs.y_test),
                   callbacks=[Worsen(), stop, spoil])
    assert stop.stopped_epoch is not None and len(h) < 30
    best = int(np.argmin(h["val_loss"]))
    assert stop.best_epoch == best
    final = tr.model.get_weights()
    for k, v in spoil.weights[best].items():
        np.testing.assert_array_equal(final[k], v)
    assert tr.evaluate(blobs.x_test, blobs.y_test)["loss"] == pytest.approx(
        min(h["val_loss"]), rel=1e-5)


def test_reduce_lr_on_plateau_lowers_the_rate():
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 2, 40)  # noise: the loss plateaus
    tr = Trainer(nnx.mlp([2, 2]), optimizer=nnx.SGD(1e-7), seed=0)
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1.0, min_lr=0.0)
    h = tr.fit(x, y, epochs=5, batch_size=40, callbacks=[plateau])
    assert tr.optimizer.lr < 1e-7
    assert h["lr"][-1] < h["lr"][0]


def test_learning_rate_scheduler_sets_the_rate_every_step():
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    y = np.arange(30) % 3
    seen = []

    class Watch(Callback):
        def on_backward_end(self, trainer, state):
            seen.append((state.step, trainer.optimizer.lr))

    tr = Trainer(nnx.mlp([2, 4, 3]), optimizer=nnx.SGD(1.0))
    tr.fit(x, y, epochs=2, batch_size=10,
           callbacks=[LearningRateScheduler(lambda s: 0.1 / (s + 1)), Watch()])
    assert [s for s, _ in seen] == list(range(6))
    assert [lr for _, lr in seen] == pytest.approx([0.1 / (s + 1) for s in range(6)])


def test_history_plot_writes_a_png_with_loss_and_accuracy_axes(tmp_path, blobs):
    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    h = tr.fit(blobs.x_train, blobs.y_train, epochs=3, batch_size=64, validation_split=0.2,
               callbacks=[LearningRateScheduler(lambda s: 0.01 * 0.9 ** s)])
    path = tmp_path / "curves.png"
    fig = h.plot(path)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:2] == ["loss", "accuracy"] and "learning rate" in labels
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train", "validation"]
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[2] in (3, 4)


# --- host reads --------------------------------------------------------------------------


@pytest.fixture
def host_reads(monkeypatch):
    """Counts every device->host read on array-api-strict arrays and the backend's to_numpy."""
    from array_api_strict._array_object import Array

    counts = {"n": 0}
    for name in ("__float__", "__bool__", "__int__", "__index__"):
        original = getattr(Array, name)

        def counted(self, *a, _original=original, **k):
            counts["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(Array, name, counted)
    backend = backends.get("strict:device1")
    original_to_numpy = backend._to_numpy

    def to_numpy(x):
        counts["n"] += 1
        return original_to_numpy(x)

    monkeypatch.setattr(backend, "_to_numpy", to_numpy)
    return backend, counts


def test_zero_host_reads_per_step(host_reads):
    backend, counts = host_reads
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    reads = {}
    for batch_size in (8, 60):  # 15 and 2 steps per epoch
        tr = Trainer(nnx.mlp([4, 8, 3], dropout=0.1), optimizer="adam", device=backend, seed=0)
        counts["n"] = 0
        tr.fit(x, y, epochs=3, batch_size=batch_size)
        reads[batch_size] = counts["n"]
        assert tr.step == 3 * (120 // batch_size)
    # one logging point per epoch reading the loss sum and the correct count: 2 reads each
    assert reads[8] == reads[60] == 3 * 2


def test_counting_catches_a_read_inside_a_step(host_reads):
    backend, counts = host_reads

    class ReadsLoss(Callback):
        def on_step_end(self, trainer, state):
            float(state.loss)

    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    tr = Trainer(nnx.mlp([4, 8, 3]), device=backend)
    counts["n"] = 0
    tr.fit(x, y, epochs=1, batch_size=8, callbacks=[ReadsLoss()])
    assert counts["n"] == 2 + 5


# --- non-finite values ---------------------------------------------------------------------


class _Bomb(nnx.Layer):
    """Identity that, in training, multiplies its input by infinity from global step ``at`` on.

    It reads the step from its trainer, so a replay of the epoch repeats it exactly.
    """

    builtin = True

    def __init__(self, at: int):
        super().__init__()
        self.at, self.trainer = at, None

    def forward(self, x, *, train=False):
        if train and self.trainer.step >= self.at:
            x = x * float("inf")

        def backward(dy):
            return dy

        return x, backward


def _bombed(at: int, **kw):
    model = nnx.Sequential([nnx.Dense(2, 4), _Bomb(at), nnx.Dense(4, 2)])
    tr = Trainer(model, **kw)
    model.layers[1].trainer = tr
    return tr, model.layers[1].name


def test_inf_injected_after_the_data_check_names_step_and_layer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.arange(40) % 2
    tr, bomb = _bombed(3, optimizer=nnx.SGD(0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError) as err:
            tr.fit(x, y, epochs=2, batch_size=10)
    assert err.value.step == 3 and err.value.layer == bomb
    assert "step 3" in str(err.value) and bomb in str(err.value)


def test_huge_learning_rate_on_a_sigmoid_net_raises_nonfinite(blobs):
    tr = Trainer(nnx.mlp([2, 16, 3], activation="sigmoid"), optimizer=nnx.SGD(1e38))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(NonFiniteError) as err:
            tr.fit(blobs.x_train, blobs.y_train, epochs=3, batch_size=32)
    assert isinstance(err.value.step, int) and err.value.layer is not None
    assert f"step {err.value.step}" in str(err.value) and "learning rate" in str(err.value)


def test_skip_keeps_the_parameters_finite():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.arange(40) % 2
    tr, _ = _bombed(6, optimizer=nnx.Adam(0.01), on_nonfinite="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h = tr.fit(x, y, epochs=2, batch_size=10)
    assert h["skipped"] == [0, 2]
    assert all(np.isfinite(v).all() for v in tr.model.get_weights().values())


# --- inference --------------------------------------------------------------------------------


def test_evaluate_predict_and_predict_proba_shapes(blobs):
    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    tr.fit(blobs.x_train, blobs.y_train, epochs=2, batch_size=32)
    n = len(blobs.x_test)
    result = tr.evaluate(blobs.x_test, blobs.y_test)
    assert set(result) == {"loss", "accuracy"} and 0 <= result["accuracy"] <= 1
    proba = tr.predict_proba(blobs.x_test)
    assert proba.shape == (n, 3) and isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    pred = tr.predict(blobs.x_test)
    assert pred.shape == (n,) and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    assert result["accuracy"] == pytest.approx((pred == blobs.y_test).mean())

    reg = nnx.data.regression(n=100, features=3, outputs=2, seed=0)
    rt = Trainer(nnx.mlp([3, 8, 2]), "mse", lr=0.01)
    rt.fit(reg.x_train, reg.y_train, epochs=1, batch_size=16)
    out = rt.predict(reg.x_test)
    assert isinstance(out, np.ndarray) and out.shape == (len(reg.x_test), 2)
    assert set(rt.evaluate(reg.x_test, reg.y_test)) == {"loss", "mae", "mse"}


# --- the pieces of an epoch: batches, one accumulator, the non-finite modes -------------------


class _HalfMSE(nnx.losses.Loss):
    """Half the mean squared error: a regression loss that is not the MSE, so the squared
    error is summed beside it."""

    name, task = "half_mse", "regression"

    def __call__(self, output, target):
        value, d = nnx.losses.MeanSquaredError()(output, target)
        return value / 2, d / 2


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "half_mse"])
def test_training_and_evaluation_share_one_accumulator(loss):
    """An epoch that does not change the model logs exactly what evaluate() returns on the
    same batches: the same sums, in the same order."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = (np.arange(50) % 3) if loss == "cross_entropy" else rng.normal(size=(50, 2))
    model = nnx.mlp([3, 6, 3 if loss == "cross_entropy" else 2])
    tr = Trainer(model, _HalfMSE() if loss == "half_mse" else loss, nnx.SGD(0.1), seed=1)

    class NoUpdate(Callback):  # plain SGD with zero gradients leaves every weight as it is
        def on_backward_end(self, trainer, state):
            trainer.model.zero_grads()

    h = tr.fit(x, y, epochs=1, batch_size=16, shuffle=False, callbacks=[NoUpdate()])
    logs = {k: v[0] for k, v in h.history.items()}
    ev = tr.evaluate(x, y, batch_size=16)
    assert set(ev) == ({"loss", "accuracy"} if loss == "cross_entropy" else {"loss", "mae", "mse"})
    assert {k: logs[k] for k in ev} == ev
    if loss == "half_mse":
        assert ev["mse"] == pytest.approx(2 * ev["loss"], rel=1e-6)


def test_batches_take_every_example_once_in_the_epoch_order():
    from nnx.train.batches import Batches, epoch_order

    b = backends.get("numpy")
    x = b.asarray(np.arange(10, dtype=np.float32)[:, None], "float32")
    y = b.asarray(np.arange(10), "int64")
    rng = np.random.default_rng(0)
    order = epoch_order(rng, 10, b, shuffle=True, full=False)
    batches = Batches(x, y, y, 4, order)
    parts = [batches.batch(i) for i in range(len(batches))]
    assert len(batches) == 3 and [len(p[1]) for p in parts] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), np.asarray(order))
    assert all(p[2] is p[1] for p in parts)  # integer labels are the targets themselves
    np.testing.assert_array_equal(np.concatenate([p[0][:, 0] for p in parts]), order)
    # no shuffle, or one full batch: no draw, and the generator does not advance
    state = rng.bit_generator.state
    assert epoch_order(rng, 10, b, shuffle=False, full=False) is None
    assert epoch_order(rng, 10, b, shuffle=True, full=True) is None
    assert rng.bit_generator.state == state


def test_dropped_batches_add_nothing_to_the_sums():
    from nnx.train.metrics import MetricSums

    b = backends.get("numpy")
    xp = b.xp
    out = b.asarray(np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), "float32")
    labels = b.asarray(np.array([0, 1, 1]), "int64")
    loss = nnx.get_loss("cross_entropy")
    kept = MetricSums(loss, b, "float32", skipping=True)
    kept.add(xp.asarray(0.5, dtype=xp.float32), out, labels, labels, 3, xp.asarray(True))
    kept.add(xp.asarray(float("nan"), dtype=xp.float32), out, labels, labels, 3,
             xp.asarray(False))
    assert kept.seen == 6 and kept.count() == 3
    assert kept.means() == {"loss": 0.5, "accuracy": 2 / 3}
    assert kept.state() == {"loss": 1.5, "correct": 2, "skipped_n": 3}
    # a resume point continues the sums exactly
    again = MetricSums(loss, b, "float32", skipping=True)
    again.load(kept.state(), kept.seen)
    assert again.means() == kept.means() and again.seen == 6


def test_nonfinite_modes_are_chosen_by_name():
    from nnx.train import nonfinite

    assert set(nonfinite.MODES) == {"raise", "skip"}
    assert nonfinite.MODES["skip"].skipping and not nonfinite.MODES["raise"].skipping
    with pytest.raises(nnx.ConfigError, match="on_nonfinite must be 'raise' or 'skip'"):
        nonfinite.check_mode("ignore")
