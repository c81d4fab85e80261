"""The dependency rule, as a test: nnx's maths never imports an array library.

Modules under ``nnx/`` take their namespace from their inputs
(``array_namespace(x)``) or from a Backend. Only the host-side modules listed
in HOST_SIDE may use NumPy, and no module of ``nnx/`` may import CuPy, torch or
array-api-strict: those belong to ``backends/``. Imports are read with ``ast``,
including those inside functions and ``importlib.import_module("...")`` calls.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

#: modules that run on the host and may import NumPy (paths relative to the repository)
HOST_SIDE = (
    "nnx/data/*",
    "nnx/checkpoint.py",
    "nnx/plot.py",
    "nnx/doctor/*",
    "nnx/cli.py",
    "nnx/__main__.py",
    "nnx/train/progress*",
    "nnx/train/lr_finder.py",
    "nnx/testing/*",
    "nnx/distributed/*",
    "nnx/export/*",
    "nnx/sklearn.py",
)
#: imported on the host side only
HOST_LIBRARIES = {"numpy"}
#: never imported anywhere in nnx/ (backends/ owns them)
DEVICE_LIBRARIES = {"cupy", "cupyx", "torch", "array_api_strict", "jax"}
#: the engines of more than one process: imported by nnx/distributed/ alone
ENGINE_LIBRARIES = {"mpi4py"}
#: the one module that may import CuPy, for NCCL (cupy.cuda.nccl)
NCCL_MODULE = "nnx/distributed/nccl.py"

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """``(line, top-level module)`` for every absolute import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and _called_name(node.func) in ("import_module", "__import__")
              and not node.args[0].value.startswith(".")):
            found.append((node.lineno, node.args[0].value))
    return [(line, name.split(".")[0]) for line, name in found]


def _called_name(func) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def violations(relpath: str, source: str) -> list[str]:
    """What ``relpath`` imports that it may not."""
    host_side = any(fnmatch.fnmatch(relpath, pattern) for pattern in HOST_SIDE)
    banned = DEVICE_LIBRARIES | (set() if host_side else HOST_LIBRARIES)
    if not fnmatch.fnmatch(relpath, "nnx/distributed/*"):
        banned |= ENGINE_LIBRARIES
    elif relpath == NCCL_MODULE:
        banned -= {"cupy"}
    return [f"{relpath}:{line} imports {name}"
            for line, name in imported_modules(source, relpath) if name in banned]


def nnx_modules() -> list[Path]:
    return sorted((ROOT / "nnx").rglob("*.py"))


def test_nnx_imports_no_array_library():
    files = nnx_modules()
    assert len(files) > 10 and ROOT / "nnx" / "layers" / "dense.py" in files
    bad = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        bad += violations(rel, path.read_text(encoding="utf-8"))
    assert not bad, ("only backends/ may import array libraries, and only the host-side "
                     "modules may import numpy:\n  " + "\n  ".join(bad))


def test_the_checker_sees_every_form_of_import():
    src = '''
import os, numpy.linalg as la
from torch import nn
from . import numpy_helpers
from .cupy_like import thing

def lazy():
    import array_api_strict
    import importlib
    return importlib.import_module("cupy"), __import__("numpy")
'''
    assert sorted(name for _, name in imported_modules(src)) == sorted(
        ["os", "numpy", "torch", "array_api_strict", "importlib", "cupy", "numpy"])
    math_module = violations("nnx/layers/new.py", src)
    assert len(math_module) == 5 and "nnx/layers/new.py:2 imports numpy" in math_module
    host_module = violations("nnx/data/new.py", src)
    assert sorted(v.rsplit(" ", 1)[1] for v in host_module) == ["array_api_strict", "cupy",
                                                                "torch"]
    assert violations("nnx/train/progress_bar.py", "import numpy") == []
    assert violations("nnx/train/trainer.py", "import numpy") != []
    assert violations("nnx/train/trainer.py", "import mpi4py") != []
    assert violations("nnx/distributed/mpi.py", "import mpi4py, numpy") == []
    assert violations("nnx/distributed/mpi.py", "import cupy") != []
    assert violations(NCCL_MODULE, "from cupy.cuda import nccl") == []


@pytest.mark.parametrize("module", ["nnx", "nnx.cli"])
def test_importing_nnx_loads_no_device_library(module):
    code = (f"import sys, {module}, nnx\n"
            "nnx.mlp([3, 4, 2]).init('cpu', 0)\n"
            f"print(sorted(m for m in {sorted(DEVICE_LIBRARIES | ENGINE_LIBRARIES)!r} "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
