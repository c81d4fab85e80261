"""BLAS threads for small matrix products: one thread where a second only costs time.

A BLAS thread pool pays for itself only on products large enough to split. On the
digits default (64-512-256-10, batch 64; largest product 64 x 512 x 256, 8.4
million multiply-adds) an epoch on NumPy took 54 ms with one OpenBLAS thread and
202 ms with two (best of 8 interleaved epochs, 2-core machine shared with other
work): between products the second thread spins on the core the main thread
needs. :func:`one_thread_for_small_products` therefore runs training on one BLAS
thread when every product of a step is below :data:`SMALL_PRODUCT`, and leaves
larger models (and any thread count set in the environment) to the library.
"""

from __future__ import annotations

from collections.abc import Callable

from ..layers import BatchNorm, Dense

__all__ = ["SMALL_PRODUCT", "largest_product", "one_thread_for_small_products"]

#: multiply-adds below which a product runs on one BLAS thread: twice the digits default's
#: largest product, about 0.25 ms on one core
SMALL_PRODUCT = 16_000_000


def largest_product(model, batch: int) -> int | None:
    """Multiply-adds of the largest matrix product of one training step, ``batch * n_in *
    n_out`` of the widest dense layer; None when a layer with parameters has products
    of unknown size (convolutions: their products grow with the image)."""
    largest = 0
    for layer in getattr(model, "layers", ()):
        if not layer.params or isinstance(layer, BatchNorm):  # BatchNorm: elementwise
            continue
        if not isinstance(layer, Dense):
            return None
        largest = max(largest, int(batch) * layer.n_in * layer.n_out)
    return largest


def one_thread_for_small_products(model, backend, batch: int) -> Callable[[], None]:
    """Limit ``backend``'s BLAS to one thread when the model's products are small (see the
    module docstring); returns the function that restores the previous count."""
    size = largest_product(model, batch)
    if size is None or size >= SMALL_PRODUCT:
        return lambda: None
    limit = getattr(backend, "limit_blas_threads", None)
    return limit(1) if limit is not None else (lambda: None)
