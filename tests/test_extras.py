"""Optional extras: declared in pyproject.toml, imported lazily, a missing one named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnx.errors import MissingExtra, NnxError
from nnx.extras import EXTRAS, install_hint, require

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def test_each_optional_package_has_its_extra():
    extras = _extras()
    assert extras["hdf5"] == ["h5py>=3.8"]
    assert [r.split(">")[0] for r in extras["onnx"]] == ["onnx", "onnxruntime"]
    assert extras["safetensors"][0].startswith("safetensors")
    assert extras["sklearn"][0].startswith("scikit-learn")
    assert extras["strict"] == ["array-api-strict==2.6.1"]
    # the strict pin is the one the tests run against
    assert "array-api-strict==2.6.1" in extras["dev"]
    for module, extra in EXTRAS.items():
        assert extra in extras, (module, extra)


def test_all_is_every_extra_that_needs_no_gpu():
    extras = _extras()
    (spec,) = extras["all"]
    name, _, rest = spec.partition("[")
    assert name == "nnx-trainer"
    listed = set(rest.rstrip("]").split(","))
    cpu_extras = {k for k in extras if not k.startswith("cuda") and k not in ("dev", "all")}
    assert listed == cpu_extras


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_a_missing_package_names_its_extra(module, monkeypatch):
    # None in sys.modules makes the import system raise ImportError for that name
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra) as info:
        require(module, "this feature")
    message = str(info.value)
    assert isinstance(info.value, NnxError) and isinstance(info.value, ImportError)
    assert f"pip install 'nnx-trainer[{EXTRAS[module]}]'" in message
    assert message.startswith("this feature needs the ")


def test_an_unknown_package_gets_a_plain_pip_hint():
    with pytest.raises(MissingExtra, match=r"pip install nnx_no_such_package_x$"):
        require("nnx_no_such_package_x", "a test")
    assert install_hint("sklearn.utils") == "pip install 'nnx-trainer[sklearn]'"


def test_require_returns_the_installed_module():
    pytest.importorskip("h5py")
    import h5py

    assert require("h5py", "HDF5") is h5py


def test_importing_nnx_loads_no_optional_package():
    code = ("import sys, nnx, nnx.extras\n"
            f"print(sorted(m for m in {sorted(EXTRAS)!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
