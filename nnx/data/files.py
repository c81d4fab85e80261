"""Bundled digits and the user's own ``.npz`` / ``.csv`` files."""

from __future__ import annotations

import gzip
import os
from importlib import resources

import numpy as np

from ..errors import DataError
from .dataset import Dataset, split_dataset


def load_digits(seed: int = 0) -> Dataset:
    """8x8 handwritten digits, 1,797 images of 10 classes, bundled with nnx (offline).

    The UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin and
    Kaynak, CC BY 4.0). Pixels (0..16) are scaled to [0, 1]; 20% stratified test split.
    """
    with resources.files("nnx.data").joinpath("digits.csv.gz").open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.float64)
    x, y = (table[:, :-1] / 16.0).astype(np.float32), table[:, -1].astype(np.int64)
    return split_dataset("digits", x, y, test_fraction=0.2, seed=seed, n_classes=10,
                         task="classification", meta={"source": "bundled", "image_shape": (8, 8)})


def _as_xy(x, y, path):
    x = np.asarray(x)
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise DataError(f"{path}: x must have one row per example, got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: the dataset is empty")
    if len(y) != x.shape[0]:
        raise DataError(f"{path}: x has {x.shape[0]} rows but y has {len(y)}; they must match")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x must be numeric, got dtype {x.dtype}")
    if x.dtype == np.uint8:
        x = x / 255.0
    bad = ~np.isfinite(x)
    if bad.any():
        raise DataError(f"{path}: x contains {int(bad.sum())} NaN or infinite values (first in "
                        f"row {int(np.argmax(bad.any(axis=1)))}); clean or impute them")
    return x.astype(np.float32), np.asarray(y)


def _task(y, path=""):
    """Classify the target: integer labels (checked: whole, >= 0) or regression values."""
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and y.ndim == 1 and np.all(np.isfinite(y))
                                 and np.all(y == np.round(y))):
        if y.size and y.min() < 0:
            i = int(np.argmin(y))
            raise DataError(f"{path}: label {y[i]:g} in row {i} is negative; class labels must "
                            "be 0, 1, ..., C-1")
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and y.ndim == 1 and
                                  np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        labels = y.astype(np.int64) if np.all(np.isfinite(y)) else y
        n_classes = int(labels.max()) + 1 if labels.size and labels.dtype.kind == "i" else None
        return "classification", labels, n_classes
    return "regression", y.astype(np.float32).reshape(len(y), -1), None


def load_file(path, seed: int = 0) -> Dataset:
    """``.npz`` with ``x`` and ``y`` (optionally ``x_test``/``y_test``), or ``.csv``
    with the label in the last column (a header row is skipped). Without a test
    set, 20% is held out (stratified for integer labels)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path} does not exist; check the path given to --dataset")
    name = os.path.basename(path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({exc})") from None
        if "x" not in arrays or "y" not in arrays:
            raise DataError(f"{path} must hold arrays named 'x' and 'y' (found "
                            f"{', '.join(arrays) or 'none'})")
        x, y = _as_xy(arrays["x"], arrays["y"], path)
        task, y, n_classes = _task(y, path)
        if "x_test" in arrays and "y_test" in arrays:
            xt, yt = _as_xy(arrays["x_test"], arrays["y_test"], path)
            _, yt, nt = _task(yt, path)
            n_classes = max(n_classes or 0, nt or 0) or None
            return Dataset(x, y, xt, yt, name, n_classes, task, {"source": path})
    elif path.endswith(".csv"):
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            skip = 0 if _numeric_row(first) else 1
            table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not a numeric CSV file ({exc}); the label goes in "
                            "the last column") from None
        if table.shape[1] < 2:
            raise DataError(f"{path} needs at least two columns: features, then the label")
        x, y = _as_xy(table[:, :-1], table[:, -1], path)
        task, y, n_classes = _task(y, path)
    else:
        raise DataError(f"{path}: unknown file type; use .npz (arrays x, y) or .csv")
    return split_dataset(name, x, y, test_fraction=0.2, seed=seed, n_classes=n_classes,
                         task=task, meta={"source": path})


def _numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.strip().split(",") if v != ""]
        return True
    except ValueError:
        return False
