"""What ``pip install`` puts in site-packages: ``nnx`` alone, with ``backends/`` inside it.

A user's working folder may hold its own ``backends/`` package; ``import nnx`` must not
see it. The repository's ``backends/`` folder is installed as ``nnx.backends``
(``package-dir`` in pyproject.toml), and the package list there must name every folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return sorted(tomllib.load(f)["tool"]["setuptools"]["packages"])


def test_pyproject_lists_every_package_folder():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nnx").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert sorted(found | {"nnx.backends"}) == _declared_packages()


def test_license_is_an_spdx_string_with_its_file():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


@pytest.mark.slow
def test_install_puts_only_nnx_in_site_packages(tmp_path):
    # a copy of the source, so that the build leaves nothing in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "build", "bench-results", "__pycache__", "*.egg-info"))
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--target", str(target), str(source)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert top == ["bin", "nnx"] or top == ["nnx"], top
    assert (target / "nnx" / "backends" / "numpy_backend.py").is_file()

    # a working folder with a backends/ package of its own does not shadow nnx's
    work = tmp_path / "work"
    (work / "backends").mkdir(parents=True)
    (work / "backends" / "__init__.py").write_text("raise ImportError('the user backends')\n")
    code = ("import nnx, sys\n"
            "assert nnx.backends.__file__.startswith(sys.argv[1]), nnx.backends.__file__\n"
            "assert 'backends' not in sys.modules\n"
            "nnx.mlp([3, 4, 2]).init('cpu', 0)\n"
            "print('ok')\n")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    ran = subprocess.run([sys.executable, "-c", code, str(target)], cwd=work, env=env,
                         capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr[-2000:]
