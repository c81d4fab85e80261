"""HDF5 files (``.h5``, ``.hdf5``), read with h5py (the ``hdf5`` extra).

Two layouts are recognised, by dataset name at the top of the file:

- the deep learning course's: ``train_set_x`` images ``(m, 64, 64, 3)`` uint8,
  ``train_set_y`` labels ``(m,)`` or ``(1, m)``, ``list_classes`` (the class
  names, as bytes). The test set is ``test_set_x``/``test_set_y`` in the same
  file or, as the course ships it, in its own file beside it: ``test_catvnoncat.h5``
  for ``train_catvnoncat.h5`` (the first ``train`` of the name becomes ``test``);
- any file with ``x`` and ``y`` (or ``x_train`` and ``y_train``), and
  optionally ``x_test`` and ``y_test``; names in any case. Class names come
  from a ``list_classes``, ``classes`` or ``class_names`` dataset.

:func:`read_hdf5` returns the arrays as stored; :func:`nnx.data.load_file`
checks them, scales uint8 images to [0, 1], flattens them and keeps their shape
and the class names (``meta["class_names"]``, label ``i`` is name ``i``).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from ..extras import require

__all__ = ["read_hdf5", "HDF5_SUFFIXES"]

HDF5_SUFFIXES = (".h5", ".hdf5")
_CLASS_NAMES = ("list_classes", "classes", "class_names")
_LAYOUTS = (("train_set_x", "train_set_y", "test_set_x", "test_set_y"),
            ("x", "y", "x_test", "y_test"),
            ("x_train", "y_train", "x_test", "y_test"))


def _open(h5py, path: str):
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file ({exc})") from None


def _datasets(h5py, f) -> dict:
    """``{lower-case name: dataset}`` at the top of the file."""
    return {name.lower(): obj for name, obj in f.items() if isinstance(obj, h5py.Dataset)}


def _listing(h5py, f) -> str:
    """Every dataset in the file with its shape and dtype, groups included."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(f"{name} {tuple(obj.shape)} {obj.dtype}")

    f.visititems(visit)
    return ", ".join(found) or "no datasets"


def _read(ds, path: str, name: str) -> np.ndarray:
    try:
        return np.asarray(ds[()])
    except (OSError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read dataset {name!r} ({exc})") from None


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    # the course stores labels as a row (1, m); nnx wants one entry per example
    if y.ndim == 2 and y.shape[0] == 1 and y.shape[1] == n and n != 1:
        return y.reshape(n)
    return y


def _class_names(h5py, f, path: str) -> list[str] | None:
    sets = _datasets(h5py, f)
    for key in _CLASS_NAMES:
        if key in sets:
            raw = _read(sets[key], path, key).reshape(-1)
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in raw.tolist()]
    return None


def _sibling_test_file(path: str) -> str | None:
    """``test_catvnoncat.h5`` beside ``train_catvnoncat.h5``, if there is one."""
    folder, name = os.path.split(path)
    i = name.lower().find("train")
    if i < 0:
        return None
    other = os.path.join(folder, name[:i] + "test" + name[i + 5:])
    return other if os.path.isfile(other) else None


def _pair(h5py, f, path: str, x_name: str, y_name: str):
    sets = _datasets(h5py, f)
    x = _read(sets[x_name], path, x_name)
    y = _read(sets[y_name], path, y_name)
    return x, _labels(y, x.shape[0] if x.ndim else 0)


def _test_from_sibling(h5py, path: str, x_name: str, y_name: str):
    other = _sibling_test_file(path)
    if other is None:
        return None, None
    with _open(h5py, other) as g:
        sets = _datasets(h5py, g)
        if x_name not in sets or y_name not in sets:
            raise DataError(f"{other} (the test file beside {os.path.basename(path)}) has no "
                            f"{x_name} and {y_name} datasets; found: {_listing(h5py, g)}")
        return _pair(h5py, g, other, x_name, y_name), other


def _check_names(names, y, path: str) -> None:
    if names is None or y.dtype.kind not in "biuf" or y.size == 0:
        return
    top = float(np.max(y))
    if y.ndim <= 1 or min(y.shape) == 1:
        if top == int(top) and top >= len(names):
            raise DataError(f"{path}: label {int(top)} has no class name: the file names "
                            f"{len(names)} classes ({', '.join(names)})")


def _unrecognised(h5py, f, sets: dict, path: str) -> DataError:
    only_test = "test_set_x" in sets and "train_set_x" not in sets
    hint = (" This looks like the course's test file: pass the train_*.h5 file beside it"
            if only_test else "")
    return DataError(f"{path} has no datasets nnx recognises (found: {_listing(h5py, f)}). "
                     "Name them x and y (and x_test, y_test), or train_set_x and train_set_y "
                     f"as the course's files do.{hint}")


def read_hdf5(path) -> tuple[np.ndarray, np.ndarray, tuple | None, dict]:
    """Read ``(x, y, test, meta)`` from an HDF5 file (see the module docstring).

    ``test`` is ``(x_test, y_test)`` or None; ``meta`` holds ``class_names``
    when the file names its classes and ``test_source`` when the test set came
    from the file beside it. Raises DataError, listing the file's datasets, when
    none of the layouts is found, and MissingExtra without h5py.
    """
    h5py = require("h5py", "reading HDF5 files")
    path = os.fspath(path)
    with _open(h5py, path) as f:
        sets = _datasets(h5py, f)
        layout = next((lay for lay in _LAYOUTS if lay[0] in sets and lay[1] in sets), None)
        if layout is None:
            raise _unrecognised(h5py, f, sets, path)
        x_name, y_name, xt_name, yt_name = layout
        if (xt_name in sets) != (yt_name in sets):
            raise DataError(f"{path} holds only one of {xt_name!r} and {yt_name!r}; store "
                            "both or neither")
        x, y = _pair(h5py, f, path, x_name, y_name)
        test = _pair(h5py, f, path, xt_name, yt_name) if xt_name in sets else None
        names = _class_names(h5py, f, path)
    meta: dict = {}
    if test is None and layout is _LAYOUTS[0]:
        test, other = _test_from_sibling(h5py, path, xt_name, yt_name)
        if other is not None:
            meta["test_source"] = other
    for labels in [y] + ([test[1]] if test is not None else []):
        _check_names(names, labels, path)
    if names is not None:
        meta["class_names"] = names
    return x, y, test, meta
