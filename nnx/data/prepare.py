"""Preparing host arrays before training: scaling and holding out a validation set.

``to_unit_range`` scales pixels; ``Standardizer`` scales features with
statistics of the training set only; ``split_validation`` holds out a
(stratified) validation set. The checks themselves are in :mod:`nnx.data.checks`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from .checks import Checked, Duplicates, check_xy, find_duplicates  # noqa: F401  (former home)
from .dataset import stratified_split


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


def split_validation(x, y, fraction: float, task: str, rng: np.random.Generator):
    """Hold out ``fraction`` of ``(x, y)``: stratified by label for classification.

    ``x`` is (n, ...), ``y`` labels (n,), rows (n, C) or targets; one-hot rows
    and binary columns are stratified by their class. Uses
    :func:`~nnx.data.stratified_split` (a random split for regression targets).
    Returns ``(x_train, y_train, (x_val, y_val))`` as host arrays.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), got {fraction}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"training data: x has shape {x.shape} and y {y.shape}; they need the "
                        "same number of rows")
    labels = y
    if task == "classification" and y.ndim == 2:  # one-hot: stratify by the class index
        labels = np.argmax(y, axis=1) if y.shape[1] > 1 else (y[:, 0] > 0.5).astype(np.int64)
    elif task == "classification" and y.dtype.kind == "f":
        labels = y.astype(np.int64) if bool(np.all(y == np.round(y))) else y
    elif task != "classification":
        labels = y.astype(np.float64)
    keep, held = stratified_split(labels, fraction, rng)
    if held.shape[0] == 0 or keep.shape[0] == 0:
        raise DataError(f"validation_split={fraction} of {x.shape[0]} examples leaves an empty "
                        "set; use a fraction between 0.05 and 0.5 or pass validation_data")
    return x[keep], y[keep], (x[held], y[held])
