"""Optional packages, imported on first use.

Each feature that needs a package outside nnx's dependencies imports it through
:func:`require`, so ``import nnx`` never loads it and a missing one is a
:class:`~nnx.errors.MissingExtra` error naming the pip extra that installs it::

    h5py = require("h5py", "reading HDF5 files")
"""

from __future__ import annotations

import importlib

from .errors import MissingExtra

__all__ = ["EXTRAS", "require", "install_hint"]

#: top-level module -> the extra of ``nnx-trainer`` that installs it
EXTRAS = {
    "h5py": "hdf5",
    "mpi4py": "mpi",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "safetensors": "safetensors",
    "sklearn": "sklearn",
    "torch": "torch",
}

#: module name -> the name pip knows it by, where they differ
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def install_hint(module: str) -> str:
    """The pip command that installs ``module`` (its nnx extra when it has one)."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"pip install {_DISTRIBUTIONS.get(top, top)}"
    return f"pip install 'nnx-trainer[{extra}]'"


def require(module: str, purpose: str):
    """Import and return ``module``; raise MissingExtra naming the extra when it is absent.

    ``purpose`` completes the sentence "... needs <package>", e.g. ``"ONNX export"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        package = _DISTRIBUTIONS.get(top, top)
        raise MissingExtra(f"{purpose} needs the {package} package, which cannot be imported "
                           f"({exc}); install it with {install_hint(module)}") from None
