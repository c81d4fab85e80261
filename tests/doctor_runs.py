"""Shared by the doctor's test files: small data sets and a training run with the doctor on."""

from __future__ import annotations

import numpy as np

import nnx
from nnx.doctor import Doctor
from nnx.train import Trainer


def blobs(n=600, k=3, d=2, seed=0, spread=1.0):
    """``k`` Gaussian clusters in ``d`` dimensions, standardised; int labels."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(k) / k
    centers = np.zeros((k, d))
    centers[:, 0], centers[:, 1] = 3 * np.cos(angles), 3 * np.sin(angles)
    centers[:, 2:] = rng.standard_normal((k, d - 2))
    y = rng.integers(0, k, n)
    x = centers[y] + spread * rng.standard_normal((n, d))
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y.astype(np.int64)


def ids(findings, severity="info"):
    rank = ("info", "warning", "error").index(severity)
    return {f.id for f in findings if ("info", "warning", "error").index(f.severity) >= rank}


def by_id(findings, finding_id):
    hits = [f for f in findings if f.id == finding_id]
    assert hits, f"no {finding_id} in {[str(f) for f in findings]}"
    return hits[0]


def train(model, x, y, *, optimizer="sgd", lr=0.1, epochs=10, batch_size=32,
          loss="cross_entropy", validation_data=None, seed=0, every=None, schedule=None,
          callbacks=(), verify_fixes=False):
    """Train with the doctor on; return its report (also after a non-finite stop)."""
    if model.backend is None:
        model.init("cpu", seed)
    doctor = Doctor(data=(x, y), validation_data=validation_data, verbose=False,
                    verify_fixes=verify_fixes, **({} if every is None else {"every": every}))
    trainer = Trainer(model, loss=loss, optimizer=optimizer, lr=lr, schedule=schedule,
                      callbacks=[doctor, *callbacks])
    try:
        trainer.fit(x, y, epochs=epochs, batch_size=batch_size,
                    validation_data=validation_data)
    except nnx.NonFiniteError as exc:
        doctor.finish(exc)
    return doctor.report


def with_weights(model, change):
    w = model.get_weights()
    change(w)
    model.set_weights(w)
    return model
