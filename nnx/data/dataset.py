"""The Dataset container and the stratified split that loaders and the trainer share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

TASKS = ("classification", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Host NumPy arrays of one dataset, already split into train and test.

    Attributes
    ----------
    x_train, x_test : float32 arrays of shape (n, features)
    y_train, y_test : int64 labels of shape (n,) for classification, or float32
        targets of shape (n, k) for regression
    name : str
    n_classes : int for classification, None for regression
    task : "classification" or "regression"
    meta : dict, e.g. ``source`` and ``image_shape`` (rows are flattened images)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int | None
    task: str = "classification"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"Dataset task must be one of {', '.join(TASKS)}, "
                              f"got {self.task!r}")

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"task={self.task}, classes={self.n_classes})")


def stratified_split(y, fraction: float, rng: np.random.Generator):
    """Indices ``(keep, held_out)`` that hold out ``fraction`` of each class.

    Parameters
    ----------
    y : array of shape (n,)
        Integer labels: each class loses the same share, and the total held out
        is ``round(n * fraction)`` (largest remainders decide the rounding). A
        class is never emptied: one example of it always stays in ``keep``.
        Any other ``y`` (float targets, shape (n, k)) gets a plain random split.
    fraction : float in [0, 1]
    rng : numpy Generator (the only source of randomness)

    Returns
    -------
    keep, held_out : sorted int64 arrays that partition ``range(n)``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"split fraction must be between 0 and 1, got {fraction}")
    y = np.asarray(y)
    n = int(y.shape[0])
    if y.ndim == 1 and y.dtype.kind in "iub":
        classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        quota = counts * fraction
        take = np.minimum(np.floor(quota).astype(np.int64), np.maximum(counts - 1, 0))
        room = (counts - 1 - take) > 0
        missing = int(round(n * fraction)) - int(take.sum())
        order = [c for c in np.argsort(-(quota - take), kind="stable") if room[c]]
        take[order[:max(missing, 0)]] += 1
        held = [rng.permutation(np.flatnonzero(inverse == c))[: take[c]]
                for c in range(len(classes))]
        held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    else:
        held_out = np.sort(rng.permutation(n)[: int(round(n * fraction))])
    held_out = held_out.astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask).astype(np.int64), held_out


def split_dataset(name: str, x, y, *, test_fraction: float, rng: np.random.Generator,
                  n_classes: int | None, task: str, meta: dict | None = None) -> Dataset:
    """Split host arrays ``x`` (n, features) and ``y`` into a :class:`Dataset`.

    Stratified by label for classification, random for regression.
    """
    keep, test = stratified_split(y, test_fraction, rng)
    return Dataset(x[keep], y[keep], x[test], y[test], name, n_classes, task, meta or {})


def as_generator(rng=None, seed: int = 0) -> np.random.Generator:
    """``rng`` when it is a Generator, else a new one seeded by ``rng`` (an int) or ``seed``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is not None and not isinstance(rng, (int, np.integer)):
        raise ConfigError(f"rng must be a numpy Generator or an int seed, got {type(rng)}")
    return np.random.default_rng(seed if rng is None else int(rng))
