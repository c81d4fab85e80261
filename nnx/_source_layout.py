"""Where ``nnx.backends`` comes from: imported first by ``nnx/__init__.py``."""

from __future__ import annotations


def _mount_backends() -> None:
    """Make ``nnx.backends`` importable from a source checkout.

    Installed, the repository's top-level ``backends/`` folder is ``nnx/backends/``
    (setuptools ``package-dir``). In a checkout it sits beside ``nnx/``: it is loaded under
    the same name, so that no top-level ``backends`` package is ever imported and a user's
    own ``backends/`` folder cannot shadow it.
    """
    import importlib.util
    import sys
    from pathlib import Path

    name = f"{__package__}.backends"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "backends"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise ImportError(f"nnx is incomplete: neither nnx/backends nor {folder} exists; "
                          "reinstall it with pip install nnx-trainer")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_mount_backends()
