"""The Dataset container and the stratified split every loader uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Host arrays of one dataset.

    ``x_*`` are float32 ``(n, features)``; ``y_*`` are int64 labels ``(n,)`` for
    classification or float32 targets ``(n, k)`` for regression.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int | None
    task: str = "classification"
    meta: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"task={self.task}, classes={self.n_classes})")


def stratified_split(y, fraction: float, rng: np.random.Generator):
    """Indices ``(keep, held_out)`` holding out ``fraction`` of each class.

    For float targets (regression) the split is a plain random one.
    """
    y = np.asarray(y)
    n = y.shape[0]
    if y.ndim == 1 and y.dtype.kind in "iu":
        held = []
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            held.append(members[: int(round(len(members) * fraction))])
        held_out = np.sort(np.concatenate(held))
    else:
        held_out = np.sort(rng.permutation(n)[: int(round(n * fraction))])
    keep = np.setdiff1d(np.arange(n), held_out, assume_unique=True)
    return keep, held_out


def split_dataset(name, x, y, *, test_fraction: float, seed: int, n_classes, task,
                  meta=None) -> Dataset:
    """Split host arrays into a :class:`Dataset` (stratified for classification)."""
    keep, test = stratified_split(y, test_fraction, np.random.default_rng([seed, 7]))
    return Dataset(x[keep], y[keep], x[test], y[test], name, n_classes, task, meta or {})
