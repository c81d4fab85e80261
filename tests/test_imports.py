"""The dependency rules, as tests.

1. nnx's maths never imports an array library. Modules under ``nnx/`` take their
   namespace from their inputs (``array_namespace(x)``) or from a Backend. Only the
   host-side modules listed in HOST_SIDE may use NumPy, and no module of ``nnx/`` may
   import CuPy, torch or array-api-strict: those belong to ``backends/``.
2. No import cycles among nnx's modules (``backends/`` included, as ``nnx.backends``).
3. Nothing imports upward: every module sits in one layer of LAYERS, and imports only
   from its own layer or lower ones. A module in no layer fails the test, which says
   where to add it.

Imports are read with ``ast``, ``importlib.import_module("...")`` calls included. An
import inside a function counts exactly like one at module level, for cycles and for
layers alike: it runs whenever the function does, and a function-level import is how a
cycle hides from Python at import time (the gradient check and the layers used to
import each other that way). The implicit import of a module's parent packages is not
counted (every module of nnx would otherwise depend on ``nnx/__init__.py``).
"""

from __future__ import annotations

import ast
import fnmatch
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

#: modules that run on the host and may import NumPy (paths relative to the repository)
HOST_SIDE = (
    "nnx/data/*",
    "nnx/checkpoint.py",
    "nnx/model_file.py",
    "nnx/safetensors_io.py",
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
    "nnx/trained.py",
    "nnx/commands.py",
)
#: imported on the host side only
HOST_LIBRARIES = {"numpy"}
#: never imported anywhere in nnx/ (backends/ owns them)
DEVICE_LIBRARIES = {"cupy", "cupyx", "torch", "array_api_strict", "jax"}
#: the engines of more than one process: imported by nnx/distributed/ alone
ENGINE_LIBRARIES = {"mpi4py"}

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
    # NCCL's CuPy module comes from backends/cupy_backend.py, never from nnx/ itself
    assert violations("nnx/distributed/nccl.py", "from cupy.cuda import nccl") != []


@pytest.mark.parametrize("module", ["nnx", "nnx.cli"])
def test_importing_nnx_loads_no_device_library(module):
    code = (f"import sys, {module}, nnx\n"
            "nnx.mlp([3, 4, 2]).init('cpu', 0)\n"
            f"print(sorted(m for m in {sorted(DEVICE_LIBRARIES | ENGINE_LIBRARIES)!r} "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# --- no cycles, nothing upward ----------------------------------------------------------

#: the layers of the code, lowest first: a module may import from its own layer and
#: the ones before it. Patterns are module names (``nnx/layers/dense.py`` is
#: ``nnx.layers.dense``; ``backends/`` is ``nnx.backends``). A new module goes into the
#: layer of what it is for; a new layer goes where its dependencies put it.
LAYERS = (
    ("backends", ("nnx.backends", "nnx.backends.*")),
    # arguments: the Python API's plain-argument rules; _startup: Ctrl-C while importing
    ("errors", ("nnx.errors", "nnx._source_layout", "nnx._startup", "nnx.extras",
                "nnx.arguments")),
    ("math", ("nnx.activations", "nnx.initializers", "nnx.losses", "nnx.inplace",
              "nnx.layers", "nnx.layers.*", "nnx.optim", "nnx.optim.*", "nnx.schedules",
              "nnx.gradcheck", "nnx.models")),
    # every file write of the host side: whole or not at all, never through a link
    ("atomic writes", ("nnx.atomic",)),
    # nnx.trained: a Sequential with its data's preprocessing, what nnx.load returns
    # model_file: the checks of every model file reader; safetensors_io: one reader
    ("host I/O", ("nnx.data", "nnx.data.*", "nnx.trained", "nnx.checkpoint", "nnx.plot",
                  "nnx.run_dir", "nnx.model_file", "nnx.safetensors_io")),
    ("testing", ("nnx.testing", "nnx.testing.*")),
    # below train: the Trainer takes a communicator (Trainer(distributed=...))
    ("distributed", ("nnx.distributed", "nnx.distributed.*")),
    # epoch_run: one epoch in progress (batches, metric sums, non-finite mode)
    ("train", ("nnx.train", "nnx.train.*", "nnx.train.epoch_run")),
    # nnx/__init__.py: the public names (re-exports math, checkpoint and train)
    ("nnx package", ("nnx",)),
    ("doctor", ("nnx.doctor", "nnx.doctor.*")),
    ("export, sklearn", ("nnx.export", "nnx.export.*", "nnx.sklearn", "nnx.sklearn.*")),
    # settings validate and normalise; build turns validated settings into objects
    ("settings", ("nnx.config", "nnx.settings", "nnx.settings.*", "nnx.settings_names")),
    # commands: predict, evaluate, summary and export of a saved model, beside build
    ("build", ("nnx.build", "nnx.build.*", "nnx.commands", "nnx.resume")),
    ("cli", ("nnx.cli", "nnx.cli_commands", "nnx.__main__")),
)

#: TEMPORARY exceptions, each to be removed by the change that removes the import:
#: (importer, imported) -> why it is still there
TEMPORARY_EXCEPTIONS: dict = {}


def module_sources(root: Path) -> dict[str, tuple[bool, str]]:
    """``{module name: (is a package, source)}`` for nnx/ and backends/ under ``root``.

    A folder without ``__init__.py`` is a package with no source of its own.
    """
    out: dict[str, tuple[bool, str]] = {}
    for base, prefix in ((root / "nnx", "nnx"), (root / "backends", "nnx.backends")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            package = parts[-1] == "__init__"
            name = ".".join([prefix, *parts[:-1]] if package else [prefix, *parts])
            out[name] = (package, path.read_text(encoding="utf-8"))
        for folder in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__" and any(folder.glob("*.py")):
                name = ".".join([prefix, *folder.relative_to(base).parts])
                out.setdefault(name, (True, ""))
    return out


def _absolute(module: str, package: bool, level: int, name: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><name> import ...``."""
    parts = module.split(".") if package else module.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([name] if name else []))


def _targets(node, module: str, package: bool, known: set[str]) -> list[str]:
    """The absolute module names one ``ast`` node imports (any library)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _absolute(module, package, node.level, node.module) if node.level else (
            node.module or "")
        # ``from x import y`` imports the module x.y when there is one, else x
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                for a in node.names]
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _called_name(node.func) == "import_module"):
        name = node.args[0].value
        level = len(name) - len(name.lstrip("."))
        return [_absolute(module, package, level, name.lstrip(".") or None) if level else name]
    return []


def nnx_imports(module: str, package: bool, source: str,
                known: set[str]) -> list[tuple[int, str]]:
    """``(line, imported nnx module)`` for every import of an nnx module in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, module)):
        for target in _targets(node, module, package, known):
            if target == "nnx" or target.startswith("nnx."):
                # the longest known module the dotted name starts with (an attribute of it)
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                found.append((node.lineno, target))
    return found


def import_graph(sources: dict[str, tuple[bool, str]], exceptions=()) -> dict[str, dict]:
    """``{module: {imported module: first line}}``, without ``exceptions`` edges."""
    known = set(sources)
    graph: dict[str, dict] = {}
    for module, (package, source) in sources.items():
        edges = graph.setdefault(module, {})
        for line, target in nnx_imports(module, package, source, known):
            if target != module and (module, target) not in exceptions:
                edges.setdefault(target, line)
    return graph


def import_cycles(graph: dict[str, dict]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` for every strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack, groups = [], []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(set(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_within(graph, group) for group in groups]


def _path_within(graph, group: set[str]) -> list[str]:
    """A cycle through the smallest module name of ``group``, by breadth-first search."""
    start = min(group)
    paths, queue = {start: [start]}, [start]
    for v in queue:  # grows while it is read
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in group and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Position of ``module``'s layer in ``layers``, or None when no pattern matches."""
    for i, (_, patterns) in enumerate(layers):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    return None


def upward_imports(graph, layers=LAYERS) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        low = layer_of(module, layers)
        for target, line in sorted(edges.items()):
            high = layer_of(target, layers)
            if low is not None and high is not None and high > low:
                bad.append(f"{module} (layer {layers[low][0]!r}) imports {target} (layer "
                           f"{layers[high][0]!r}, higher) at line {line}")
    return bad


def _cycle_text(cycle, graph) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


def _layering_problems(root: Path) -> list[str]:
    sources = module_sources(root)
    graph = import_graph(sources, TEMPORARY_EXCEPTIONS)
    order = ", ".join(n for n, _ in LAYERS)
    problems = [f"{m} is in no layer: add it to LAYERS in tests/test_imports.py, in the layer "
                f"of what it is for (lowest first: {order})"
                for m in sorted(sources) if layer_of(m) is None]
    problems += ["import cycle: " + _cycle_text(c, graph) for c in import_cycles(graph)]
    problems += ["upward import: " + u for u in upward_imports(graph)]
    return problems


def test_every_module_has_a_layer_no_cycle_and_no_upward_import():
    sources = module_sources(ROOT)
    assert {"nnx", "nnx.layers.dense", "nnx.backends._base", "nnx.cli"} <= set(sources)
    problems = _layering_problems(ROOT)
    assert not problems, "\n  ".join(["the layering of nnx is broken:", *problems])
    # an exception whose import is gone hides nothing: say so, so that it gets removed
    graph = import_graph(sources)
    stale = [pair for pair in TEMPORARY_EXCEPTIONS if pair[1] not in graph.get(pair[0], {})]
    if stale:
        warnings.warn(f"remove from TEMPORARY_EXCEPTIONS in tests/test_imports.py, the "
                      f"imports are gone: {stale}", stacklevel=1)


SYNTHETIC = {
    # module: (is a package, source)
    "nnx": (True, "from . import layers\nfrom .train import Trainer\n"),
    "nnx.errors": (False, "import os\n"),
    "nnx.layers": (True, "from .dense import Dense\nfrom .. import errors\n"),
    "nnx.layers.dense": (False, "from ..errors import E\n\ndef f():\n"
                                "    from ..gradcheck import check\n"),
    "nnx.gradcheck": (False, "import nnx.layers.dense\n"),  # a cycle through a function
    "nnx.train": (True, "from . import loop\n"),
    "nnx.train.loop": (False, "import importlib\nimportlib.import_module('nnx.cli')\n"),
    "nnx.cli": (False, "from .train.loop import run\n"),
    "nnx.mystery": (False, ""),
}
SYNTHETIC_LAYERS = (("errors", ("nnx.errors",)),
                    ("math", ("nnx.layers", "nnx.layers.*", "nnx.gradcheck")),
                    ("train", ("nnx.train", "nnx.train.*")), ("nnx package", ("nnx",)),
                    ("cli", ("nnx.cli",)))


def test_the_checker_finds_cycles_upward_imports_and_unplaced_modules():
    graph = import_graph(SYNTHETIC)
    assert graph["nnx.layers"] == {"nnx.layers.dense": 1, "nnx.errors": 2}
    assert graph["nnx.layers.dense"] == {"nnx.errors": 1, "nnx.gradcheck": 4}
    assert graph["nnx.train"] == {"nnx.train.loop": 1}
    cycles = sorted(import_cycles(graph))
    assert cycles == [["nnx.cli", "nnx.train.loop", "nnx.cli"],
                      ["nnx.gradcheck", "nnx.layers.dense", "nnx.gradcheck"]]
    assert "nnx.layers.dense (line 4) -> nnx.gradcheck" in _cycle_text(cycles[1], graph)
    up = upward_imports(graph, SYNTHETIC_LAYERS)
    assert up == ["nnx.train.loop (layer 'train') imports nnx.cli (layer 'cli', higher) at "
                  "line 2"]
    assert [m for m in SYNTHETIC if layer_of(m, SYNTHETIC_LAYERS) is None] == ["nnx.mystery"]
    # an exception removes exactly its edge
    fixed = import_graph(SYNTHETIC, {("nnx.gradcheck", "nnx.layers.dense"),
                                     ("nnx.train.loop", "nnx.cli")})
    assert import_cycles(fixed) == [] and upward_imports(fixed, SYNTHETIC_LAYERS) == []


def test_a_planted_cycle_and_upward_import_fail_on_a_copy_of_the_tree(tmp_path):
    for folder in ("nnx", "backends"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.gz", "*.csv"))
    assert _layering_problems(tmp_path) == _layering_problems(ROOT)
    with open(tmp_path / "nnx" / "losses.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from .train import Trainer\n    return Trainer\n")
    with open(tmp_path / "nnx" / "activations.py", "a", encoding="utf-8") as f:
        f.write("\nfrom .losses import get_loss  # noqa\n")
    with open(tmp_path / "nnx" / "losses.py", "a", encoding="utf-8") as f:
        f.write("\nfrom . import activations  # noqa\n")
    (tmp_path / "nnx" / "newthing.py").write_text("")
    found = "\n".join(_layering_problems(tmp_path))
    assert "upward import: nnx.losses (layer 'math') imports nnx.train (layer 'train'" in found
    assert "import cycle: nnx.activations" in found and "-> nnx.losses" in found
    assert "nnx.newthing is in no layer: add it to LAYERS in tests/test_imports.py" in found
