"""The user's own data: ``.npz`` and ``.csv`` files.

``.npz``: arrays ``x`` (n, features) or images (n, h, w, ...) that are
flattened, and ``y``; optionally ``x_test`` and ``y_test``. Read with
``allow_pickle=False``. uint8 ``x`` is scaled to [0, 1].

``.csv`` (or ``.csv.gz``): numbers separated by commas, one example per row,
the label in the last column; with a header row, a column named ``label``,
``target``, ``class`` or ``y`` is the label wherever it is.

The task is inferred from ``y`` unless given: integer labels, or whole numbers
in one column, mean classification; other floats and several columns that are
not one-hot mean regression.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import ConfigError, DataError
from .checks import check_seed, check_xy
from .dataset import TASKS, Dataset, as_generator, split_dataset
from .prepare import to_unit_range

#: header names taken as the label column, in order of preference
LABEL_COLUMNS = ("label", "target", "class", "y")


def _guess_task(y: np.ndarray) -> str:
    if y.dtype.kind not in "biuf":  # not numbers: check_xy names the problem
        return "classification"
    if y.ndim == 2 and y.shape[1] > 1:
        yf = y.astype(np.float64)
        one_hot = np.isin(yf, (0.0, 1.0)).all() and np.all(yf.sum(axis=1) == 1.0)
        return "classification" if one_hot else "regression"
    if y.dtype.kind in "biu":
        return "classification"
    flat = y.reshape(-1).astype(np.float64)
    whole = np.isfinite(flat).all() and np.all(flat == np.round(flat))
    return "classification" if whole else "regression"


def _prepare_x(x: np.ndarray, path: str, meta: dict) -> np.ndarray:
    if x.ndim > 2:
        meta.setdefault("image_shape", tuple(x.shape[1:]))
        x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # -1 fails for 0 rows
    if x.dtype == np.uint8:
        x = to_unit_range(x)
    return x


def _read_npz(path: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise DataError(f"{path} holds object arrays or is damaged ({exc}); save plain "
                        "numeric arrays with np.savez(path, x=x, y=y)") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path} must hold arrays named 'x' and 'y' (found "
                        f"{', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} holds only one of 'x_test' and 'y_test'; store both or neither")
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return arrays["x"], arrays["y"], test


def _read_csv(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            first = f.readline()
        header = None if _numeric_row(first) else [c.strip().strip('"').lower()
                                                    for c in first.split(",")]
        table = np.loadtxt(path, delimiter=",", skiprows=0 if header is None else 1, ndmin=2,
                           dtype=np.float64, encoding="utf-8")
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a numeric CSV file ({exc}); every row needs the same "
                        "number of comma-separated numbers, the label last") from None
    if table.shape[1] < 2:
        raise DataError(f"{path} needs at least two columns: features, then the label")
    column = table.shape[1] - 1
    if header is not None:
        named = [header.index(c) for c in LABEL_COLUMNS if c in header]
        if named:
            column = named[0]
        if len(header) != table.shape[1]:
            raise DataError(f"{path}: the header has {len(header)} names but rows have "
                            f"{table.shape[1]} values")
    x = np.delete(table, column, axis=1)
    return x, table[:, column], None


def _numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.strip().split(",")]
        return True
    except ValueError:
        return False


def _n_classes(labels: np.ndarray, path: str) -> int:
    """Number of classes for checked int64 labels 0..C-1: a label too large to be a class index is a
    DataError (it would size the output layer); classes without examples are warned about."""
    import warnings

    n_classes = int(labels.max()) + 1
    if n_classes > labels.shape[0]:
        i = int(np.argmax(labels == labels.max()))
        raise DataError(f"{path}: label {int(labels.max())} in row {i} is out of range: "
                        f"{labels.shape[0]} examples cannot cover {n_classes} classes. Class "
                        "labels must be 0, 1, ..., C-1; renumber them (np.unique(y, "
                        "return_inverse=True))")
    present = np.unique(labels)
    if len(present) < n_classes:
        missing = sorted(set(range(n_classes)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        warnings.warn(f"{path}: labels go up to {n_classes - 1} but classes {shown} have no "
                      f"examples; the model gets {n_classes} outputs. Renumber the labels "
                      "0..C-1 if that is not intended", stacklevel=3)
    return n_classes


def load_file(path, *, seed: int = 0, rng=None, test_fraction: float = 0.2,
              task: str | None = None) -> Dataset:
    """Load a ``.npz``, ``.csv`` or ``.h5`` file into a :class:`Dataset`.

    Without stored test arrays, ``test_fraction`` of the rows is held out
    (stratified by label for classification) using ``rng`` or ``seed``.
    ``task`` ("classification" or "regression") overrides the guess from ``y``.
    """
    path = os.fspath(path)
    seed = check_seed(seed)
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist; check the path given to --dataset")
    x, y, test, extra = _read(path)
    meta = {"source": path, **extra}
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(f"{path}: x and y must be arrays with one row per example, got shapes "
                        f"{x.shape} and {y.shape}")
    task = task or _guess_task(y)
    x, y, one_hot = check_xy(_prepare_x(x, path, meta), y, task, where=path)
    meta["one_hot"] = one_hot
    classify = task == "classification"
    name = os.path.basename(path)
    if test is None:
        n_classes = _n_classes(y, path) if classify else None
        return split_dataset(name, x, y, test_fraction=test_fraction,
                             rng=as_generator(rng, seed), n_classes=n_classes, task=task,
                             meta=meta)
    xt, yt = _test_arrays(path, test, x, y, task)
    n_classes = _n_classes(np.concatenate([y, yt]), path) if classify else None
    return Dataset(x, y, xt, yt, name, n_classes, task, meta)


def _read(path: str):
    """``(x, y, test or None, extra)`` from a file, by its suffix; ``extra`` is what a reader
    knows beyond the arrays (class names)."""
    lower = path.lower()
    if lower.endswith(".npz"):
        return (*_read_npz(path), {})
    if lower.endswith((".csv", ".csv.gz")):
        return (*_read_csv(path), {})
    if lower.endswith((".h5", ".hdf5")):
        from .hdf5 import read_hdf5

        return read_hdf5(path)
    raise DataError(f"{path}: unknown file type; use .npz (arrays x, y), .csv (label in "
                    "the last column) or .h5 (datasets x, y)")


def _test_arrays(path: str, test, x: np.ndarray, y: np.ndarray, task: str):
    """The file's own test arrays, checked like the training arrays and against them."""
    xt, yt = np.asarray(test[0]), np.asarray(test[1])
    if xt.ndim == 0 or yt.ndim == 0:
        raise DataError(f"{path}: x_test and y_test must be arrays, got shapes {xt.shape} and "
                        f"{yt.shape}")
    xt, yt, _ = check_xy(_prepare_x(xt, path, {}), yt, task, where=f"{path} (test arrays)")
    if xt.shape[1] != x.shape[1]:
        raise DataError(f"{path}: x has {x.shape[1]} features but x_test has {xt.shape[1]}")
    if task != "classification" and yt.shape[1] != y.shape[1]:
        raise DataError(f"{path}: y has {y.shape[1]} target columns but y_test has "
                        f"{yt.shape[1]}")
    return xt, yt
