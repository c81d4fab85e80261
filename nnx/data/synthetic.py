"""Small synthetic problems for demos and tests, all seeded.

Each returns a :class:`Dataset` with a 20% stratified test split. ``x`` is
float32 ``(n, features)``; labels are int64; ``regression`` targets float32 ``(n, 1)``.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, split_dataset


def _finish(name, x, y, seed, n_classes, task="classification") -> Dataset:
    x = x.astype(np.float32)
    y = y.astype(np.int64) if task == "classification" else y.astype(np.float32)
    return split_dataset(name, x, y, test_fraction=0.2, seed=seed, n_classes=n_classes, task=task,
                         meta={"source": "synthetic"})


def spirals(n: int = 1500, classes: int = 3, noise: float = 0.15, seed: int = 0) -> Dataset:
    """Interleaved spiral arms in 2-D, one per class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    r = rng.uniform(0.05, 1.0, n)
    angle = 4.0 * r + y * 2 * np.pi / classes + rng.normal(0, noise, n)
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return _finish("spirals", x, y, seed, classes)


def moons(n: int = 1000, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Two interleaving half circles."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = rng.uniform(0, np.pi, n)
    x = np.where(y[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1),
                 np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    return _finish("moons", x + rng.normal(0, noise, x.shape), y, seed, 2)


def circles(n: int = 1000, noise: float = 0.05, factor: float = 0.5, seed: int = 0) -> Dataset:
    """A small circle inside a large one."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = rng.uniform(0, 2 * np.pi, n)
    r = np.where(y == 0, 1.0, factor)
    x = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    return _finish("circles", x + rng.normal(0, noise, x.shape), y, seed, 2)


def xor(n: int = 1000, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Four clusters at the corners; opposite corners share a class."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2, (n, 2))
    y = corners[:, 0] ^ corners[:, 1]
    x = corners * 2.0 - 1.0 + rng.normal(0, noise * 2, (n, 2))
    return _finish("xor", x, y, seed, 2)


def blobs(n: int = 1000, classes: int = 4, features: int = 2, spread: float = 1.0,
          seed: int = 0) -> Dataset:
    """Gaussian clusters around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5, 5, (classes, features))
    y = np.arange(n) % classes
    return _finish("blobs", centres[y] + rng.normal(0, spread, (n, features)), y, seed, classes)


def regression(n: int = 1000, features: int = 5, noise: float = 0.1, seed: int = 0) -> Dataset:
    """``y = sin(x @ a) + 0.5 * (x @ b) + noise``: a smooth non-linear target ``(n, 1)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, features))
    a, b = rng.normal(0, 0.7, features), rng.normal(0, 0.5, features)
    y = np.sin(x @ a) + 0.5 * (x @ b) + rng.normal(0, noise, n)
    return _finish("regression", x, y[:, None], seed, None, task="regression")


GENERATORS = {"spirals": spirals, "moons": moons, "circles": circles, "xor": xor,
              "blobs": blobs, "regression": regression}
