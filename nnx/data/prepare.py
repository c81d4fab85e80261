"""Checking and preparing host arrays before training.

``check_xy`` finds the data problems that otherwise surface as a strange loss
curve (NaN features, labels out of range, mismatched lengths); ``Standardizer``
scales features with statistics of the training set only; ``find_duplicates``
counts rows shared by two sets (train/test leakage).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import TASKS


class Checked(NamedTuple):
    """What :func:`check_xy` returns: ``x, y, from_one_hot = check_xy(...)``."""

    x: np.ndarray
    y: np.ndarray
    from_one_hot: bool


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def check_xy(x, y, task: str, n_classes: int | None = None,
             where: str = "training data") -> Checked:
    """Validate a pair of host arrays and return them in the dtypes nnx trains on.

    Parameters
    ----------
    x : array of shape (n, features), numeric
    y : for classification, labels of shape (n,) (or (n, 1)) holding whole
        numbers 0..n_classes-1, or one-hot rows of shape (n, C) (converted to
        labels by argmax); for regression, targets of shape (n,) or (n, k)
    task : "classification" or "regression"
    n_classes : the number of classes, when known (labels must be below it)
    where : how messages name this data, e.g. "test data" or a file name

    Returns
    -------
    Checked(x, y, from_one_hot): ``x`` float32 (n, features); ``y`` int64 (n,)
    or float32 (n, k); ``from_one_hot`` True when ``y`` was converted from one-hot.

    Raises DataError naming the problem, the row and what to do.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: y must be numeric, got dtype {y.dtype}")
    if x.ndim != 2:
        hint = ("; for one feature use x.reshape(-1, 1)" if x.ndim == 1 else
                "; flatten images with x.reshape(len(x), -1)" if x.ndim > 2 else "")
        raise DataError(f"{where}: x must be 2-D (examples, features), got shape {x.shape}{hint}")
    if y.ndim == 0 or y.ndim > 2:
        raise DataError(f"{where}: y must have one entry (or row) per example, got shape "
                        f"{y.shape}")
    n = x.shape[0]
    if y.shape[0] != n:
        raise DataError(f"{where}: x has {n} rows but y has {y.shape[0]}; they must have the "
                        "same length")
    if n == 0:
        raise DataError(f"{where} is empty: x and y have 0 rows")
    if x.shape[1] == 0:
        raise DataError(f"{where}: x has 0 features (shape {x.shape})")
    bad = ~np.isfinite(x) if x.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise DataError(f"{where}: x contains {int(bad.sum())} NaN or infinite values (first "
                        f"in row {_first_bad_row(bad)}); clean or impute them")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        over = ~np.isfinite(x32)
        if over.any():
            raise DataError(f"{where}: x holds {int(over.sum())} values too large for "
                            f"float32 (first in row {_first_bad_row(over)}); rescale the "
                            "features")
    if task == "regression":
        y = y.astype(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            raise DataError(f"{where}: {int(bad.sum())} regression targets are NaN or infinite "
                            f"(first in row {_first_bad_row(bad)}); drop or fix those rows")
        return Checked(x32, y.reshape(n, -1).astype(np.float32), False)
    return Checked(x32, *_labels(y, n_classes, where))


def _labels(y: np.ndarray, n_classes: int | None, where: str) -> tuple[np.ndarray, bool]:
    """int64 labels (n,) from labels or one-hot rows, checked; and whether it was one-hot."""
    from_one_hot = False
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        yf = y.astype(np.float64)
        sums = yf.sum(axis=1)
        bad = ~(np.isfinite(yf).all(axis=1) & (yf >= 0).all(axis=1)
                & (np.abs(sums - 1.0) <= 1e-4))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: y has shape {y.shape}, so it is read as one-hot rows, "
                            f"but row {i} is {np.array2string(y[i], threshold=12)} (sum "
                            f"{sums[i]:g}); pass integer labels of shape (n,) or rows of "
                            "non-negative values summing to 1")
        if n_classes is not None and y.shape[1] != n_classes:
            raise DataError(f"{where}: y has {y.shape[1]} one-hot columns but there are "
                            f"{n_classes} classes")
        y, from_one_hot = np.argmax(yf, axis=1), True
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: label in row {i} is {y[i]}; labels must be whole "
                            "numbers 0, 1, ..., C-1")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.argmax(frac))
            raise DataError(f"{where}: label {y[i]:g} in row {i} is not a whole number; class "
                            "labels must be 0, 1, ..., C-1 (use task='regression' for "
                            "continuous targets)")
    y = y.astype(np.int64)
    low, high = int(y.min()), int(y.max())
    if low < 0:
        i = int(np.argmax(y == low))
        raise DataError(f"{where}: label {low} in row {i} is negative; class labels must be "
                        "0, 1, ..., C-1 (map -1/1 labels to 0/1)")
    if n_classes is not None and high >= n_classes:
        i = int(np.argmax(y == high))
        raise DataError(f"{where}: label {high} in row {i} is out of range for {n_classes} "
                        f"classes; labels must be 0..{n_classes - 1}")
    return y, from_one_hot


def to_unit_range(x, max_value: float | None = None) -> np.ndarray:
    """float32 copy of ``x`` divided by ``max_value`` (default 255 for uint8 images).

    ``x`` : array of any shape with values in [0, max_value]. Raises DataError
    when values fall outside that range.
    """
    x = np.asarray(x)
    if max_value is None:
        if x.dtype != np.uint8:
            raise ConfigError(f"to_unit_range needs max_value for {x.dtype} input; only uint8 "
                              "defaults to 255")
        max_value = 255.0
    if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > max_value):
        raise DataError(f"values span [{x.min()}, {x.max()}], outside [0, {max_value}]; "
                        "pass the right max_value")
    return x.astype(np.float32) / np.float32(max_value)


class Standardizer:
    """Per-feature ``(x - mean) / std``, fitted on the training set only.

    A feature with (near) zero spread keeps std 1, so it is centred, not blown up.
    ``mean`` and ``std`` are float32 arrays of shape (features,).
    """

    def __init__(self, mean=None, std=None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)

    def fit(self, x) -> Standardizer:
        """Learn mean and std from ``x`` (n, features), accumulating in float64."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError(f"Standardizer.fit needs a non-empty (n, features) array, got "
                            f"shape {x.shape}")
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std <= 1e-7 * np.maximum(1.0, np.abs(mean))] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        return self

    def _check(self, x):
        if self.mean is None:
            raise ConfigError("Standardizer is not fitted; call fit(x_train) first")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise DataError(f"Standardizer was fitted on {self.mean.shape[0]} features but got "
                            f"shape {x.shape}")
        return x.astype(np.float32)

    def transform(self, x) -> np.ndarray:
        """float32 ``(x - mean) / std``, shape (n, features)."""
        return (self._check(x) - self.mean) / self.std

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)

    def inverse_transform(self, z) -> np.ndarray:
        """float32 ``z * std + mean``: back to the original units."""
        return self._check(z) * self.std + self.mean

    def state(self) -> dict:
        """``{"mean": ..., "std": ...}`` to save beside a model; ``Standardizer(**state)``."""
        return {"mean": self.mean, "std": self.std}


class Duplicates(NamedTuple):
    """What :func:`find_duplicates` returns.

    ``count``: rows of ``x_b`` with an identical row in ``x_a`` (or, for one
    array, rows repeating an earlier row); ``examples``: int64 (k, 2) pairs
    ``(row in x_a, row in x_b)``, at most ``max_examples`` of them.
    """

    count: int
    examples: np.ndarray


def _row_bytes(x: np.ndarray, dtype) -> np.ndarray:
    """uint64 words (n, w) holding each row's bytes, zero-padded to a multiple of 8."""
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.dtype.kind == "f":
        x = x + 0  # -0.0 becomes 0.0, so equal values have equal bytes
    raw = x.view(np.uint8).reshape(x.shape[0], -1)
    pad = -raw.shape[1] % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((raw.shape[0], pad), np.uint8)], axis=1)
    return raw.view(np.uint64)


def _row_hashes(words: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """A 64-bit hash per row: mixed words times fixed odd multipliers, summed mod 2**64."""
    mult = np.random.default_rng(12345).integers(1, 2**63, words.shape[1], dtype=np.uint64)
    mult |= np.uint64(1)
    out = np.empty(words.shape[0], np.uint64)
    for start in range(0, words.shape[0], chunk):
        w = words[start:start + chunk]
        w = w ^ (w >> np.uint64(29))
        out[start:start + chunk] = (w * mult).sum(axis=1, dtype=np.uint64)
    return out


def find_duplicates(x_a, x_b=None, *, max_examples: int = 5) -> Duplicates:
    """Rows of ``x_b`` (n_b, features) that also occur in ``x_a`` (n_a, features).

    With ``x_b`` None, finds rows of ``x_a`` that repeat an earlier row. Rows
    are compared exactly (bytes after converting both to a common dtype, with
    -0.0 equal to 0.0); hashing keeps it fast (60,000 x 784 rows in a fraction of a second).
    """
    x_a = np.asarray(x_a)
    x_a = x_a.reshape(x_a.shape[0], -1) if x_a.ndim != 2 else x_a
    if x_b is None:
        return _self_duplicates(x_a, max_examples)
    x_b = np.asarray(x_b)
    x_b = x_b.reshape(x_b.shape[0], -1) if x_b.ndim != 2 else x_b
    if x_a.shape[1] != x_b.shape[1]:
        raise DataError(f"cannot compare rows of {x_a.shape[1]} and {x_b.shape[1]} features")
    dtype = np.result_type(x_a, x_b)
    wa, wb = _row_bytes(x_a, dtype), _row_bytes(x_b, dtype)
    ha, hb = _row_hashes(wa), _row_hashes(wb)
    order = np.argsort(ha, kind="stable")
    sorted_ha = ha[order]
    left = np.searchsorted(sorted_ha, hb, side="left")
    right = np.searchsorted(sorted_ha, hb, side="right")
    pairs = []
    for j in np.flatnonzero(right > left):
        for k in range(left[j], right[j]):  # almost always one candidate
            if np.array_equal(wa[order[k]], wb[j]):
                pairs.append((int(order[k]), int(j)))
                break
    examples = np.array(pairs[:max_examples], dtype=np.int64).reshape(-1, 2)
    return Duplicates(len(pairs), examples)


def _self_duplicates(x: np.ndarray, max_examples: int) -> Duplicates:
    words = _row_bytes(x, x.dtype)
    h = _row_hashes(words)
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    pairs = []
    for pos in np.flatnonzero(sorted_h[1:] == sorted_h[:-1]) + 1:
        later = int(order[pos])
        start = int(np.searchsorted(sorted_h, sorted_h[pos], side="left"))
        for k in range(start, pos):
            if np.array_equal(words[order[k]], words[later]):
                pairs.append((int(order[k]), later))
                break
    pairs.sort(key=lambda p: p[1])
    examples = np.array(pairs[:max_examples], dtype=np.int64).reshape(-1, 2)
    return Duplicates(len(pairs), examples)
