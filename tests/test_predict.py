"""A trained model on new data: Trainer.predict, predict_proba and evaluate, their
shapes and types, and the same results in batches.
"""

from __future__ import annotations

import numpy as np
import pytest
from small_trainers import adam_trainer

import nnx
from nnx.errors import DataError
from nnx.train import Trainer


def test_predict_and_evaluate_in_batches(blobs_400):
    tr = adam_trainer()
    tr.fit(blobs_400.x_train, blobs_400.y_train, epochs=2, batch_size=32)
    whole = tr.predict_proba(blobs_400.x_test)
    parts = tr.predict_proba(blobs_400.x_test, batch_size=7)
    np.testing.assert_allclose(parts, whole, rtol=1e-6)
    assert tr.evaluate(blobs_400.x_test, blobs_400.y_test, batch_size=7) == pytest.approx(
        tr.evaluate(blobs_400.x_test, blobs_400.y_test))
    with pytest.raises(DataError, match="2-D"):
        tr.predict(blobs_400.x_test[:, 0])


def test_evaluate_predict_and_predict_proba_shapes(blobs_300):
    tr = Trainer(nnx.mlp([2, 8, 3]), lr=0.01)
    tr.fit(blobs_300.x_train, blobs_300.y_train, epochs=2, batch_size=32)
    n = len(blobs_300.x_test)
    result = tr.evaluate(blobs_300.x_test, blobs_300.y_test)
    assert set(result) == {"loss", "accuracy"} and 0 <= result["accuracy"] <= 1
    proba = tr.predict_proba(blobs_300.x_test)
    assert proba.shape == (n, 3) and isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    pred = tr.predict(blobs_300.x_test)
    assert pred.shape == (n,) and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    assert result["accuracy"] == pytest.approx((pred == blobs_300.y_test).mean())

    reg = nnx.data.regression(n=100, features=3, outputs=2, seed=0)
    rt = Trainer(nnx.mlp([3, 8, 2]), "mse", lr=0.01)
    rt.fit(reg.x_train, reg.y_train, epochs=1, batch_size=16)
    out = rt.predict(reg.x_test)
    assert isinstance(out, np.ndarray) and out.shape == (len(reg.x_test), 2)
    assert set(rt.evaluate(reg.x_test, reg.y_test)) == {"loss", "mae", "mse"}
