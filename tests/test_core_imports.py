"""Import rules, read from the source with ``ast`` (imports inside functions count too).

- Only the host-side modules may import NumPy; everything else goes through a
  Backend and its Array API namespace.
- No module of ``nnx`` imports an array library directly (CuPy, torch,
  array-api-strict): only ``backends/`` knows them.
- The maths does not depend on data loading or the command line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

NNX = Path(__file__).resolve().parent.parent / "nnx"

#: host-side modules (paths relative to the repository root; a trailing / is a package)
NUMPY_ALLOWED = ("nnx/data/", "nnx/checkpoint.py", "nnx/plot.py", "nnx/doctor/", "nnx/cli.py",
                 "nnx/run_dir.py", "nnx/config.py", "nnx/__main__.py")
ARRAY_LIBRARIES = ("cupy", "torch", "array_api_strict")
MATH_MODULES = ("nnx/activations.py", "nnx/losses.py", "nnx/layers/", "nnx/optim/",
                "nnx/init.py", "nnx/schedules.py", "nnx/inplace.py", "nnx/model.py")
MATH_FORBIDDEN = ("nnx.data", "nnx.cli")


def _rel(path: Path) -> str:
    return path.relative_to(NNX.parent).as_posix()


def _matches(rel: str, prefixes) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in prefixes)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(NNX.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, as absolute dotted names, with line numbers.

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name`` (name may be a
    submodule); relative imports are resolved against the module's package.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
    return found


def _is(module: str, top: str) -> bool:
    return module == top or module.startswith(top + ".")


MODULES = sorted(NNX.rglob("*.py"))


def test_modules_found():
    rels = {_rel(p) for p in MODULES}
    assert {"nnx/__init__.py", "nnx/activations.py", "nnx/layers/dense.py"} <= rels


def test_resolves_relative_imports():
    # the resolver itself: relative levels, packages and from-imports inside functions
    assert _module_name(NNX / "layers" / "__init__.py") == "nnx.layers"
    mods = {m for _, m in imported_modules(NNX / "layers" / "dense.py")}
    assert "nnx.init" in mods and "nnx.layers.base" in mods


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_numpy_only_in_host_side_modules(path):
    if _matches(_rel(path), NUMPY_ALLOWED):
        return
    bad = [(line, m) for line, m in imported_modules(path) if _is(m, "numpy")]
    assert not bad, (f"{_rel(path)} imports NumPy (lines {[b[0] for b in bad]}); use the "
                     "backend's namespace, or move host-side code to an allowed module")


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_array_library_imported_directly(path):
    bad = [(line, m) for line, m in imported_modules(path)
           if any(_is(m, lib) for lib in ARRAY_LIBRARIES)]
    assert not bad, f"{_rel(path)} imports {bad}; only backends/ may import array libraries"


@pytest.mark.parametrize("path", [p for p in MODULES if _matches(_rel(p), MATH_MODULES)],
                         ids=_rel)
def test_maths_does_not_depend_on_data_or_cli(path):
    bad = [(line, m) for line, m in imported_modules(path)
           if any(_is(m, f) for f in MATH_FORBIDDEN)]
    assert not bad, f"{_rel(path)} imports {bad}; dependencies point from data/CLI to the maths"


def test_every_math_module_exists():
    rels = {_rel(p) for p in MODULES}
    for m in MATH_MODULES:
        assert any(r == m or r.startswith(m) for r in rels), m


def test_checker_catches_imports(tmp_path, monkeypatch):
    # the checker sees imports inside functions and relative from-imports
    pkg = tmp_path / "nnx" / "layers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    src = pkg / "bad.py"
    src.write_text("def f():\n    import numpy as np\n    from ..data import load\n"
                   "    from .. import cli\n    import torch.nn\n")
    monkeypatch.setattr(sys.modules[__name__], "NNX", tmp_path / "nnx")
    mods = {m for _, m in imported_modules(src)}
    assert {"numpy", "nnx.data", "nnx.data.load", "nnx.cli", "torch.nn"} <= mods
