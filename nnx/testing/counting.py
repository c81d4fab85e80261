"""Count what a training step would cost on a GPU: array operations and host syncs.

Two ways to count, both recording the same :class:`Counts`:

- :func:`counting_backend` wraps any backend: its namespace ``xp`` counts every
  function call, and its arrays are proxies that count every operator. A
  function or operator is one *op* (a proxy for a kernel launch); attribute
  reads, basic slicing and dtype queries are not. Device-to-host transfers and
  synchronisations are counted apart as *syncs*: ``__float__``, ``__bool__``,
  ``__int__``, ``__index__``, ``__complex__``, ``__array__``, ``__dlpack__``,
  ``item``, ``tolist``, printing, ``get`` (CuPy), ``cpu``/``numpy`` (torch) and
  ``Backend.to_numpy``. Build the model and Trainer on
  the wrapped backend; the backend's fast paths are counted too, one op a call.
- :func:`count` counts on an *unmodified* array-api-strict backend, where every
  array operation is a Python call into ``array_api_strict``: it records the
  outermost such calls with a profiler hook.

Read ``counts.ops`` and ``counts.syncs`` before and after a step (a callback's
``on_step_end``) to get them per step, or around ``fit`` for an epoch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..backends import get

#: attribute reads and views that launch no kernel
NOT_OPS = frozenset({"ndim", "shape", "dtype", "device", "size", "mT", "T",
                     "__array_namespace__", "__len__", "__repr__", "__hash__",
                     "__getitem__", "isdtype", "finfo", "iinfo", "result_type", "can_cast",
                     "__array_namespace_info__"})
SYNC_NAMES = frozenset({"__float__", "__bool__", "__int__", "__index__", "__array__",
                        "__complex__", "__dlpack__", "item", "tolist", "to_numpy"})
#: also host reads when called on an array: CuPy's get, torch's cpu/numpy, printing
PROXY_SYNCS = SYNC_NAMES | {"get", "cpu", "numpy", "__repr__", "__str__", "__format__"}


@dataclass
class Counts:
    """Operations and host syncs seen so far."""

    ops: int = 0
    syncs: int = 0
    by_name: dict = field(default_factory=dict)
    sync_names: dict = field(default_factory=dict)

    def op(self, name: str) -> None:
        self.ops += 1
        self.by_name[name] = self.by_name.get(name, 0) + 1

    def sync(self, name: str) -> None:
        self.syncs += 1
        self.sync_names[name] = self.sync_names.get(name, 0) + 1


# --- a counting namespace and array proxy around any backend -------------------------

def _unwrap(v):
    if type(v) is CountingArray:
        return v._a
    if type(v) in (list, tuple):
        return type(v)(_unwrap(i) for i in v)
    return v


class CountingArray:
    """An array that counts its operators and host reads, then delegates them."""

    __slots__ = ("_a", "_ns")
    __array_ufunc__ = None  # NumPy operators defer to ours instead of converting us
    __array_priority__ = 1000

    def __init__(self, a, ns: CountingNamespace) -> None:
        self._a, self._ns = a, ns

    def __array_namespace__(self, api_version=None):
        return self._ns

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    device = property(lambda self: self._a.device)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._ns._xp.size(self._a) if hasattr(self._ns._xp, "size")
                    else self._a.size)
    mT = property(lambda self: CountingArray(self._a.mT, self._ns))
    T = property(lambda self: CountingArray(self._a.T, self._ns))

    def __len__(self) -> int:
        return len(self._a)


    def __getitem__(self, key):
        return self._ns._wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value) -> None:
        self._ns.counts.op("__setitem__")
        self._a[_unwrap(key)] = _unwrap(value)

    def __getattr__(self, name):  # methods outside the operators (to_device, ...)
        value = getattr(self._a, name)
        if not callable(value):
            return value
        return self._ns._function(name, value, sync=name in PROXY_SYNCS)


def _operator(name: str, kind: str):
    def op(self, *args):
        ns = self._ns
        if kind == "sync":
            ns.counts.sync(name)
            return getattr(self._a, name)(*args)
        ns.counts.op(name)
        result = getattr(self._a, name)(*_unwrap(args))
        if result is NotImplemented:
            return result
        if kind == "inplace":  # keep identity: other references see the change
            self._a = result
            return self
        return ns._wrap(result)

    op.__name__ = name
    return op


_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
           "xor", "lshift", "rshift")
for _n in _BINARY:
    for _f, _kind in ((f"__{_n}__", "op"), (f"__r{_n}__", "op"), (f"__i{_n}__", "inplace")):
        setattr(CountingArray, _f, _operator(_f, _kind))
for _f in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__neg__", "__pos__",
           "__abs__", "__invert__"):
    setattr(CountingArray, _f, _operator(_f, "op"))
for _f in ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__",
           "__dlpack__", "__repr__", "__str__", "__format__"):
    setattr(CountingArray, _f, _operator(_f, "sync"))
CountingArray.__hash__ = None


class CountingNamespace:
    """Wraps a namespace (``xp``, or a backend's fast-path table): each call is one op."""

    def __init__(self, xp, counts: Counts, array_types: tuple, arrays_of=None) -> None:
        self._xp, self.counts, self._types = xp, counts, array_types
        self.__name__ = getattr(xp, "__name__", type(xp).__name__)
        # the namespace the results belong to: a fast-path table's results are the xp's arrays
        self._owner = arrays_of if arrays_of is not None else self

    def _wrap(self, r):
        if isinstance(r, self._types):
            return CountingArray(r, self._owner)
        if type(r) in (list, tuple):
            return type(r)(self._wrap(i) for i in r)
        return r

    def _function(self, name, fn, sync=False):
        def call(*args, **kwargs):
            if sync:
                self.counts.sync(name)
            elif name not in NOT_OPS:
                self.counts.op(name)
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            return self._wrap(fn(*_unwrap(args), **kwargs))

        call.__name__ = name
        return call

    def __getattr__(self, name):
        value = getattr(self._xp, name)
        if isinstance(value, type) or not callable(value) or name.startswith("__"):
            return value  # dtypes (NumPy's are classes), constants, modules' dunders
        wrapped = self._function(name, value)
        self.__dict__[name] = wrapped
        return wrapped


class _CountingRng:
    def __init__(self, rng, ns: CountingNamespace) -> None:
        self._rng, self._ns = rng, ns

    def uniform(self, shape, dtype):
        self._ns.counts.op("uniform")
        return self._ns._wrap(self._rng.uniform(shape, dtype))

    def get_state(self):
        return self._rng.get_state()

    def set_state(self, state):
        self._rng.set_state(state)


def counting_backend(backend):
    """A copy of ``backend`` whose namespace, arrays and fast paths count into ``.counts``.

    Returns a :class:`~backends.Backend` (same name and device, label
    ``"<label>+counting"``) with an extra attribute ``counts`` (:class:`Counts`).
    """
    xp = backend.xp
    sample = xp.zeros((1,), dtype=xp.float32, device=backend.device)
    # 0-d results may be scalars of the library (NumPy's np.float32): take their root class
    types = (type(sample), type(xp.sum(sample)).__mro__[-2])
    counts = Counts()
    ns = CountingNamespace(xp, counts, types)
    fast = getattr(backend, "fast", None)

    def to_numpy(x):
        counts.sync("to_numpy")
        return backend.to_numpy(_unwrap(x))

    wrapped = dataclasses.replace(
        backend, label=f"{backend.label}+counting", xp=ns, _to_numpy=to_numpy,
        _device_rng=lambda seed: _CountingRng(backend.device_rng(seed), ns))
    if fast is not None:
        wrapped.fast = CountingNamespace(fast, counts, types, arrays_of=ns)
    wrapped.counts = counts
    return wrapped


# --- counting on an unmodified array-api-strict backend --------------------------------

@contextmanager
def count(backend=None):
    """Count strict-array operations and host syncs in the ``with`` block.

    ``backend`` (optional, a strict backend; default ``get("strict")``) also counts its
    ``to_numpy`` calls as syncs.
    """
    # the strict library's own files, found from the backend, so nnx imports no array library
    strict = backend if backend is not None else get("strict")
    root = os.path.dirname(sys.modules[strict.xp.__name__.split(".")[0]].__file__)
    counts = Counts()
    depth = [0]

    def profiler(frame, event, arg):
        if event not in ("call", "return"):
            return
        code = frame.f_code
        if not code.co_filename.startswith(root):
            return
        if event == "call":
            if depth[0] == 0:
                name = code.co_name
                if name in SYNC_NAMES:
                    counts.sync(name)
                elif name not in NOT_OPS and (not name.startswith("_") or name.startswith("__")):
                    counts.op("elementwise" if name in ("wrapper", "func") else name)
            depth[0] += 1
        else:
            depth[0] -= 1

    original = None
    if backend is not None:
        original = backend._to_numpy

        def to_numpy(x):
            counts.sync("to_numpy")
            return original(x)

        backend._to_numpy = to_numpy
    old = sys.getprofile()
    sys.setprofile(profiler)
    try:
        yield counts
    finally:
        sys.setprofile(old)
        if backend is not None:
            backend._to_numpy = original
