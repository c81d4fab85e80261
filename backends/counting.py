"""Count what a training step would cost on a GPU: array operations and host syncs.

Works on the array-api-strict backend, where every array operation is a Python
call into ``array_api_strict``: :func:`count` records the outermost such calls
(a proxy for kernel launches) and, separately, every device-to-host transfer
or synchronisation (``__float__``, ``__bool__``, ``__int__``, ``__index__``,
``__array__``, ``__dlpack__``, ``item``/``tolist`` and ``Backend.to_numpy``).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

#: attribute reads and views that launch no kernel
NOT_OPS = frozenset({"ndim", "shape", "dtype", "device", "size", "mT", "T",
                     "__array_namespace__", "__len__", "__repr__", "__hash__"})
SYNC_NAMES = frozenset({"__float__", "__bool__", "__int__", "__index__", "__array__",
                        "__complex__", "__dlpack__", "item", "tolist", "to_numpy"})


@dataclass
class Counts:
    """Operations and host syncs seen inside a :func:`count` block."""

    ops: int = 0
    syncs: int = 0
    by_name: dict = field(default_factory=dict)
    sync_names: dict = field(default_factory=dict)


@contextmanager
def count(backend=None):
    """Count strict-array operations and host syncs in the ``with`` block.

    ``backend`` (optional) also counts its ``to_numpy`` calls as syncs.
    """
    import array_api_strict

    root = array_api_strict.__file__.rsplit("/", 1)[0]
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
                    counts.syncs += 1
                    counts.sync_names[name] = counts.sync_names.get(name, 0) + 1
                elif name not in NOT_OPS and (not name.startswith("_") or name.startswith("__")):
                    if name in ("wrapper", "func"):  # a decorated strict function
                        name = "elementwise"
                    counts.ops += 1
                    counts.by_name[name] = counts.by_name.get(name, 0) + 1
            depth[0] += 1
        else:
            depth[0] -= 1

    original = None
    if backend is not None:
        original = backend._to_numpy

        def to_numpy(x):
            counts.syncs += 1
            counts.sync_names["to_numpy"] = counts.sync_names.get("to_numpy", 0) + 1
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
