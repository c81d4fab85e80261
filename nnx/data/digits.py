"""The bundled 8x8 handwritten digits: 1,797 images of 10 classes, no network needed.

Source: "Optical Recognition of Handwritten Digits" by E. Alpaydin and C. Kaynak
(1998), the test set (``optdigits.tes``) from the UCI Machine Learning
Repository, https://archive.ics.uci.edu/dataset/80, licensed CC BY 4.0.
``digits.csv.gz`` holds it unchanged: 64 pixel counts (0..16) then the label.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from .dataset import Dataset, as_generator, split_dataset

SOURCE = ("UCI Optical Recognition of Handwritten Digits (Alpaydin and Kaynak, 1998), "
          "test set, CC BY 4.0")


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The whole bundled table: ``x`` float32 (1797, 64) in [0, 1], ``y`` int64 (1797,)."""
    with resources.files("nnx.data").joinpath("digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt", encoding="ascii") as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    x = table[:, :-1].astype(np.float32) / np.float32(16.0)
    return x, table[:, -1].copy()


def load_digits(seed: int = 0, *, rng=None, test_fraction: float = 0.2) -> Dataset:
    """Digits with a stratified test split (20% by default) drawn from ``rng`` or ``seed``.

    Returns a :class:`Dataset`: ``x`` float32 (n, 64) with pixels scaled to
    [0, 1] (divided by 16), ``y`` int64 labels 0..9; ``meta["image_shape"]`` is (8, 8).
    """
    x, y = read_digits()
    return split_dataset("digits", x, y, test_fraction=test_fraction,
                         rng=as_generator(rng, seed), n_classes=10, task="classification",
                         meta={"source": SOURCE, "image_shape": (8, 8)})
