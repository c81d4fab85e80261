"""Fast paths a backend registers: ``backend.fast`` (functions that write into ``out=``)
and the namespace ``backend.xp`` with hot functions routed to the library's own.

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

array-api-compat wraps some functions to give the standard's type promotion and
edge cases; where the arguments already have one dtype the wrapper only costs
time (on torch ``matmul`` +5 to +15 us, ``take`` +10 us a call, the size of a
small GPU kernel). :class:`Namespace` is the compat namespace with such
functions replaced by the library's own, each called only where it computes
exactly what the wrapper would; :func:`array_namespace` returns it for the
library's arrays, remembered per array type, so looking it up costs a dict read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import array_api_compat


@dataclass(frozen=True)
class OutKernels:
    """Elementwise functions with an ``out=`` array, for one library, and optional fused ones.

    multiply(a, b, out=o) : ``o[...] = a * b``
    divide(a, b, out=o)   : ``o[...] = a / b``
    sqrt(a, out=o)        : ``o[...] = sqrt(a)``

    ``out`` may be one of the inputs. ``b`` may be a Python scalar.

    Optional (None where the library has none), each one call:

    linear(x, w, b)       : ``x @ w + b`` (torch ``addmm``; may round differently)
    addmm_(c, a, b)       : ``c += a @ b`` in place, no temporary (torch ``addmm_``)
    <name>_backward(dy, z, a[, alpha]) : ``dy * derivative(z=z, a=a)`` of nnx's built-in
        activation ``name`` (relu, leaky_relu, sigmoid, tanh) in one kernel. torch has
        ReLU's only, ``threshold_backward``: the same values wherever ``z`` and ``dy`` are
        finite (a zero may lose its sign), and 5 to 10 times faster on the CPU than the
        comparison, cast and product, whose bool tensors torch handles slowly; where
        ``z`` is NaN it passes ``dy`` on, and where ``z <= 0`` it gives 0 for any ``dy``
    sgd_update(p, g, m, lr, momentum, nesterov), rmsprop_update(p, g, v, lr, rho, eps),
    adam_update(p, g, m, v, lr, beta1, beta2, eps, t) : the optimizer's whole update of
        ``p`` and its state in one kernel, the same operations in the same order as the
        unfused path (bitwise equal), leaving ``g`` zero

    The fused kernels are CuPy's (:mod:`backends.cupy_kernels`), bitwise equal to the
    separate operations.
    """

    library: str
    multiply: Callable
    divide: Callable
    sqrt: Callable
    linear: Callable | None = None
    addmm_: Callable | None = None
    relu_backward: Callable | None = None
    leaky_relu_backward: Callable | None = None
    sigmoid_backward: Callable | None = None
    tanh_backward: Callable | None = None
    sgd_update: Callable | None = None
    rmsprop_update: Callable | None = None
    adam_update: Callable | None = None

    @classmethod
    def of(cls, module, library: str, **fused) -> OutKernels:
        """The kernels of a NumPy-like module (``numpy``, ``cupy``): its ufuncs."""
        return cls(library, module.multiply, module.divide, module.sqrt, **fused)

    @classmethod
    def of_torch(cls) -> OutKernels:
        import torch

        def linear(x, w, b):
            return torch.addmm(b, x, w)

        def addmm_(c, a, b):
            c.addmm_(a, b)
            return c

        def relu_backward(dy, z, a):
            return torch.ops.aten.threshold_backward(dy, z, 0)

        return cls("torch", torch.mul, torch.div, torch.sqrt, linear=linear, addmm_=addmm_,
                   relu_backward=relu_backward)


class Namespace:
    """An array-api-compat namespace with some functions replaced (``overrides``).

    Every other name is the compat namespace's own. ``base`` is that namespace.
    """

    def __init__(self, base, library: str, **overrides) -> None:
        self.base, self.library = base, library
        self.__name__ = getattr(base, "__name__", library)
        self.overridden = frozenset(overrides)
        self.__dict__.update(overrides)

    def __getattr__(self, name):  # only names not set yet: look up once, then keep
        value = getattr(self.base, name)
        if not name.startswith("__"):
            self.__dict__[name] = value
        return value

    def __repr__(self) -> str:
        return f"<{self.__name__} with {', '.join(sorted(self.overridden))} direct>"


def numpy_like(base, module, library: str) -> Namespace:
    """The namespace of a NumPy-like library (``numpy``, ``cupy``): ``matmul`` and
    ``take`` called directly (the same functions, without the wrappers' Python layers)."""

    def take(x, indices, /, *, axis=None):
        if axis is None or not isinstance(x, module.ndarray):
            return base.take(x, indices, axis=axis)
        return x.take(indices, axis=axis)

    return Namespace(base, library, matmul=module.matmul, take=take)


#: compat module name -> function building that library's Namespace (set by the backends)
_BUILDERS: dict[str, Callable[[object], object]] = {}
_BY_MODULE: dict[str, object] = {}
#: array type -> namespace, for the libraries' own array types only (a proxy type such as
#: nnx.testing's counting array returns a namespace per instance, so it is never kept)
_BY_TYPE: dict[type, object] = {}
_KEPT_LIBRARIES = frozenset({"numpy", "torch", "cupy", "array_api_strict"})


def register(module_name: str, build: Callable[[object], object]) -> None:
    """Let ``build(compat_namespace)`` make the namespace of arrays whose compat namespace
    is called ``module_name`` (``"array_api_compat.torch"``)."""
    _BUILDERS[module_name] = build
    _BY_MODULE.pop(module_name, None)
    _BY_TYPE.clear()


def fast_namespace(base):
    """The registered :class:`Namespace` for a compat namespace, or ``base`` itself."""
    name = getattr(base, "__name__", None)
    if name not in _BUILDERS or sys.modules.get(name) is not base:  # not that very module
        return base
    ns = _BY_MODULE.get(name)
    if ns is None:
        ns = _BY_MODULE[name] = _BUILDERS[name](base)
    return ns


def array_namespace(*arrays):
    """``array_api_compat.array_namespace(*arrays)``, with hot functions routed to the
    library's own (:class:`Namespace`); one array of a known type costs a dict read."""
    if len(arrays) == 1:
        ns = _BY_TYPE.get(type(arrays[0]))
        if ns is not None:
            return ns
    ns = fast_namespace(array_api_compat.array_namespace(*arrays))
    if len(arrays) == 1 and type(arrays[0]).__module__.partition(".")[0] in _KEPT_LIBRARIES:
        _BY_TYPE[type(arrays[0])] = ns
    return ns
