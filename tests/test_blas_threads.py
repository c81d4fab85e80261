"""BLAS threads: training with small matrix products runs on one BLAS thread (NumPy).

The limit lasts for ``fit`` only, is left alone where the environment sets a thread
count, and is not applied to models with large or unknown products.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import get_backend_or_skip

import nnx
from nnx.train.threads import SMALL_PRODUCT, largest_product

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


class _Seen(nnx.callbacks.Callback):
    def __init__(self):
        self.threads = []

    def on_epoch_begin(self, trainer, epoch):
        self.threads.append(_blas_threads())


def _fit(sizes, batch=64, device="numpy"):
    rng = np.random.default_rng(0)
    x = rng.random((2 * batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], 2 * batch)
    seen = _Seen()
    nnx.Trainer(nnx.mlp(sizes), "cross_entropy", "adam", device=device).fit(
        x, y, epochs=1, batch_size=batch, callbacks=[seen])
    return seen.threads[0]


@pytest.fixture
def several_threads(monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    get_backend_or_skip("numpy")
    limiter = threadpoolctl.threadpool_limits(limits=2, user_api="blas")
    before = _blas_threads()
    if not before or max(before) < 2:
        limiter.restore_original_limits()
        pytest.skip("NumPy's BLAS runs one thread here")
    yield before
    limiter.restore_original_limits()


def test_the_largest_product_of_a_step():
    digits = nnx.mlp([64, 512, 256, 10]).init("numpy", 0)
    assert largest_product(digits, 64) == 64 * 512 * 256 < SMALL_PRODUCT
    assert largest_product(nnx.mlp([784, 512, 10]).init("numpy", 0), 128) == 128 * 784 * 512
    assert largest_product(nnx.mlp([8, 16, 2], batchnorm=True).init("numpy", 0), 4) == 4 * 8 * 16
    assert largest_product(nnx.cnn((8, 8, 1), 3, filters=(4,), dense=8).init("numpy", 0), 4) is None


def test_small_products_train_on_one_blas_thread(several_threads):
    assert _fit([64, 512, 256, 10]) == [1] * len(several_threads)
    assert _blas_threads() == several_threads  # restored after fit


def test_large_products_and_the_environment_keep_the_library_count(several_threads, monkeypatch):
    assert _fit([784, 512, 10]) == several_threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert _fit([64, 512, 256, 10]) == several_threads


def test_other_backends_are_not_steered(several_threads):
    get_backend_or_skip("torch")
    assert _fit([64, 512, 256, 10], device="torch") == several_threads
