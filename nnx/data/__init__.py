"""Datasets as host NumPy arrays: bundled digits, MNIST files, synthetic sets, your files.

``load(name)`` returns a :class:`Dataset`; moving data to a device is the
trainer's job.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .dataset import Dataset, split_dataset, stratified_split
from .files import load_digits, load_file
from .idx import read_idx, write_idx
from .mnist import load_mnist
from .synthetic import GENERATORS, blobs, circles, moons, regression, spirals, xor

DATASETS = ("digits", "mnist", "fashion-mnist", *GENERATORS)

__all__ = ["Dataset", "DATASETS", "load", "stratified_split", "split_dataset", "load_digits",
           "load_file", "load_mnist", "read_idx", "write_idx", "spirals", "moons", "circles",
           "xor", "blobs", "regression"]


def load(name: str, *, data_dir=None, seed: int = 0, download: bool = True,
         quiet: bool = False) -> Dataset:
    """Load a dataset by name (see ``DATASETS``) or from a ``.npz``/``.csv`` path."""
    key = str(name).strip().lower()
    if key == "digits":
        return load_digits(seed)
    if key in ("mnist", "fashion-mnist"):
        return load_mnist(key, data_dir, download=download, quiet=quiet)
    if key in GENERATORS:
        return GENERATORS[key](seed=seed)
    if key.endswith((".npz", ".csv")) or os.sep in str(name):
        return load_file(name, seed)
    raise ConfigError(f"unknown dataset {name!r}; valid datasets are: {', '.join(DATASETS)}, "
                      "or a path to a .npz (arrays x, y) or .csv file")
