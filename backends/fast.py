"""Fast paths a backend registers as ``backend.fast``: functions that write into ``out=``.

The Array API has no ``out=`` argument, so portable code allocates a new array
for every result. NumPy, CuPy and PyTorch can write a result into an existing
array instead; on a parameter-sized update that saves a temporary and, where a
copy followed by an in-place operation becomes one call, a whole pass over
memory (and on a GPU a kernel launch).

``backend.fast`` is an :class:`OutKernels` (or None where the library has no
such functions: array-api-strict, JAX). Each function computes exactly its
standard expression, the same operation in the same precision, so a fast path
gives bitwise the results of the standard path; tests/test_fast_paths.py
checks that on every backend that has one. Callers must check that the
output array is writeable (``nnx.inplace.writeable``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class OutKernels:
    """Elementwise functions with an ``out=`` array, for one library.

    multiply(a, b, out=o) : ``o[...] = a * b``
    divide(a, b, out=o)   : ``o[...] = a / b``
    sqrt(a, out=o)        : ``o[...] = sqrt(a)``

    ``out`` may be one of the inputs. ``b`` may be a Python scalar.
    """

    library: str
    multiply: Callable
    divide: Callable
    sqrt: Callable

    @classmethod
    def of(cls, module, library: str) -> OutKernels:
        """The kernels of a NumPy-like module (``numpy``, ``cupy``): its ufuncs."""
        return cls(library, module.multiply, module.divide, module.sqrt)

    @classmethod
    def of_torch(cls) -> OutKernels:
        import torch

        return cls("torch", torch.mul, torch.div, torch.sqrt)
