"""Host syncs and array operations of training, counted on every CPU backend.

A training step must never read a device value on the host (on a GPU each
read waits for the queue to drain); an epoch reads only at its logging points.
The counting backend wraps the real namespace, so NumPy's and torch's own
paths (and their fast paths) are what gets counted, not a stand-in.

Two other counters check the same from the outside: the counting context of
``nnx.testing.counting`` around a whole fit, and array-api-strict's own conversions
counted directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import get_backend_or_skip

import nnx
from nnx import backends
from nnx.testing.counting import Counts, count, counting_backend
from nnx.train import Callback, ProgressBar, Trainer

DEVICES = ["numpy", "strict", "strict:device1", "torch"]


@pytest.fixture(params=DEVICES)
def counted(request):
    return counting_backend(get_backend_or_skip(request.param))


def _data(n=192, n_in=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    y = np.argmax(x[:, :classes], axis=1)
    return x, y


class _Marks(nnx.callbacks.Callback):
    """(ops, syncs) after every step and at every epoch end, read from the counter."""

    def __init__(self, counts: Counts):
        self.counts, self.steps, self.epochs = counts, [], []

    def on_epoch_begin(self, trainer, epoch):
        self.steps.append((epoch, self.counts.ops, self.counts.syncs))

    def on_step_end(self, trainer, state):
        self.steps.append((state.epoch, self.counts.ops, self.counts.syncs))

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs.append(self.counts.syncs)


def _fit(backend, model, optimizer, batch_size, epochs=2, **fit):
    x, y = _data()
    marks = _Marks(backend.counts)
    trainer = nnx.Trainer(model, "cross_entropy", optimizer, device=backend)
    trainer.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=[marks], **fit)
    return marks, trainer


def _per_step(marks):
    """(ops, syncs) of every step; an epoch's first also counts the epoch's set-up ops."""
    return [(b[1] - a[1], b[2] - a[2]) for a, b in zip(marks.steps, marks.steps[1:])
            if a[0] == b[0]]


# --- the wrapper itself -----------------------------------------------------------------------


def test_counting_backend_counts_operators_functions_and_reads(counted):
    xp, c = counted.xp, counted.counts
    a = counted.asarray(np.arange(6, dtype=np.float32).reshape(2, 3), "float32")
    before = (c.ops, c.syncs)
    b = xp.matmul(a, a.mT) + 1.0  # two ops; .mT is a view
    b *= 2.0
    s = xp.sum(b)
    assert (c.ops - before[0], c.syncs - before[1]) == (4, 0)
    assert float(s) == pytest.approx(2 * (5 + 14 + 14 + 50 + 4))
    assert c.syncs - before[1] == 1 and c.sync_names["__float__"] >= 1
    ref = b
    b += 1.0  # in place keeps identity: other references see the change
    assert b is ref
    host = counted.to_numpy(b)
    assert isinstance(host, np.ndarray) and host.shape == (2, 2)
    assert c.syncs - before[1] == 2 and c.sync_names["to_numpy"] >= 1
    assert tuple(a.shape) == (2, 3) and c.syncs - before[1] == 2


def test_counting_backend_trains_like_the_backend_it_wraps(counted):
    base = backends.get(counted.label.rsplit("+", 1)[0])
    x, y = _data()
    losses = []
    for b in (base, counted):
        tr = nnx.Trainer(nnx.mlp([6, 8, 3]), "cross_entropy", nnx.SGD(0.1, momentum=0.9),
                         device=b)
        losses.append(tr.fit(x, y, epochs=2, batch_size=32)["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


# --- training steps make no host reads --------------------------------------------------------


OPTIMIZERS = {
    "sgd": lambda: nnx.SGD(0.05),
    "momentum": lambda: nnx.SGD(0.05, momentum=0.9),
    "nesterov+clip": lambda: nnx.SGD(0.05, momentum=0.9, nesterov=True, clip_norm=1.0),
    "adam": lambda: nnx.Adam(1e-3),
    "adamw+l2": lambda: nnx.AdamW(1e-3, l2=1e-4),
    "rmsprop": lambda: nnx.RMSProp(1e-3),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_a_step_makes_no_host_read(counted, opt):
    marks, _ = _fit(counted, nnx.mlp([6, 16, 8, 3]), OPTIMIZERS[opt](), batch_size=16)
    steps = _per_step(marks)
    assert len(steps) == 2 * 12
    assert all(syncs == 0 for _, syncs in steps), steps
    # the same operations every step: nothing grows or branches on values
    assert len({ops for ops, _ in steps[1:12]}) == 1, steps


class _EveryHook(Callback):
    """Implements every hook without reading anything: must not add host reads."""

    def __init__(self):
        self.steps = 0

    def on_backward_end(self, trainer, state):
        self.steps += 1

    def on_step_end(self, trainer, state):
        assert not isinstance(state.loss, float)


def _syncs(backend, batch_size, callbacks=(), **fit):
    ds = nnx.data.blobs(n=240, classes=3, seed=0)
    tr = Trainer(nnx.mlp([2, 8, 3], dropout=0.1), device=backend, lr=0.01)
    with count(backend) as c:
        tr.fit(ds.x_train, ds.y_train, epochs=3, batch_size=batch_size, callbacks=callbacks,
               **fit)
    return c.syncs, tr


def test_no_host_read_per_step():
    strict = backends.get("strict:device1")
    full, tr_full = _syncs(strict, "full")
    many, tr_many = _syncs(strict, 8, callbacks=[_EveryHook()],
                           validation_split=0.2)
    assert tr_full.steps_per_epoch == 1 and tr_many.steps_per_epoch == 20
    # host reads happen per epoch (loss, accuracy, validation), never per step
    val_reads = 2 * 3
    assert many == full + val_reads, (full, many)
    assert full <= 3 * 2


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


def test_dropout_and_batchnorm_steps_make_no_host_read(counted):
    model = nnx.mlp([6, 16, 8, 3], dropout=0.2, batchnorm=True)
    marks, _ = _fit(counted, model, nnx.Adam(1e-3), batch_size=32)
    assert all(syncs == 0 for _, syncs in _per_step(marks))


def test_skip_mode_steps_make_no_host_read(counted):
    """Skipping non-finite steps decides on the device: no read per step, the same
    operations every step, and a fixed number of reads per epoch."""
    marks, _ = _fit(counted, nnx.mlp([6, 16, 3]), nnx.Adam(1e-3), 16, epochs=3)
    skip = nnx.Trainer(nnx.mlp([6, 16, 3]), "cross_entropy", nnx.Adam(1e-3), device=counted,
                       on_nonfinite="skip")
    x, y = _data()
    smarks = _Marks(counted.counts)
    h = skip.fit(x, y, epochs=3, batch_size=16, callbacks=[smarks])
    steps = _per_step(smarks)
    assert len(steps) == 3 * 12 and all(syncs == 0 for _, syncs in steps), steps
    assert len({ops for ops, _ in steps[1:12]}) == 1, steps
    # loss and accuracy, as in raise mode, plus the skipped steps and examples
    assert set(np.diff(smarks.epochs).tolist()) == {4} and h["skipped"] == [0, 0, 0]
    assert set(np.diff(marks.epochs).tolist()) == {2}


def test_an_epoch_reads_only_at_its_logging_point(counted):
    """The reads per epoch do not depend on how many steps it has."""
    per_epoch = {}
    for batch in (8, 64, "full"):
        model = nnx.mlp([6, 8, 3])
        marks, tr = _fit(counted, model, nnx.SGD(0.05, momentum=0.9), batch, epochs=3)
        reads = np.diff(marks.epochs)  # epochs 2 and 3 (the first also uploads the data)
        per_epoch[batch] = (tr.steps_per_epoch, set(reads.tolist()))
    assert per_epoch[8][0] == 24 and per_epoch["full"][0] == 1
    assert len({r for _, rs in per_epoch.values() for r in rs}) == 1, per_epoch
    # loss and accuracy: two reads
    assert per_epoch[8][1] == {2}, per_epoch


def test_validation_adds_its_reads_once_per_epoch(counted):
    x, y = _data(64, seed=1)
    plain, _ = _fit(counted, nnx.mlp([6, 8, 3]), nnx.SGD(0.05), 16, epochs=3)
    val, _ = _fit(counted, nnx.mlp([6, 8, 3]), nnx.SGD(0.05), 16, epochs=3,
                  validation_data=(x, y))
    assert all(s == 0 for _, s in _per_step(val))
    extra = np.diff(val.epochs) - np.diff(plain.epochs)
    assert extra.tolist() == [2, 2]  # validation loss and accuracy


# --- a read inside a step is caught -----------------------------------------------------------


class _ReadsEveryStep(nnx.callbacks.Callback):
    def on_step_end(self, trainer, state):
        float(state.loss)


def test_a_read_inside_a_step_is_caught(counted):
    x, y = _data()
    marks = _Marks(counted.counts)
    tr = nnx.Trainer(nnx.mlp([6, 8, 3]), "cross_entropy", "sgd", lr=0.05, device=counted)
    tr.fit(x, y, epochs=1, batch_size=32, callbacks=[_ReadsEveryStep(), marks])
    assert [s for _, s in _per_step(marks)] == [1] * 6


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


def test_printing_and_library_transfers_count_as_reads(counted):
    c = counted.counts
    a = counted.asarray(np.ones((2, 2), dtype=np.float32), "float32")
    before = c.syncs
    text = f"{a!r} {a}"
    assert "1" in text and c.syncs - before == 2
    if counted.name == "torch":
        a.cpu()
        assert c.syncs - before == 3


# --- the progress bar -------------------------------------------------------------------------


class _Tty:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_bar_reads_the_device_only_when_it_redraws():
    strict = backends.get("strict:device1")
    base, _ = _syncs(strict, 8)
    quiet, _ = _syncs(strict, 8, callbacks=[ProgressBar(stream=_Tty(), quiet=True)])
    tty = _Tty()
    live, tr = _syncs(strict, 8, callbacks=[ProgressBar(stream=tty, every=5)])
    assert quiet == base
    redraws = 3 * (tr.steps_per_epoch // 5)
    assert live == base + redraws
    assert tty.text.count("\r") >= redraws and tty.text.count("\n") == 3
