"""Datasets as host NumPy arrays: bundled digits, MNIST files, synthetic sets, your files.

``load(name)`` returns a :class:`Dataset` of float32 features ``(n, features)``
and int64 labels ``(n,)`` (or float32 targets ``(n, k)``); moving data to a
device is the trainer's job. ``checks`` holds the data checks that the
loaders, the Trainer and the doctor share (``check_xy``, ``check_labels``,
``find_duplicates``); ``prepare`` the scalers and the validation split
(``Standardizer``, ``to_unit_range``, ``split_validation``); ``preprocessing``
what a saved model does to raw data (``Preprocessing``). A folder of IDX files
is read by :mod:`nnx.data.idx_folder`.
"""

from __future__ import annotations

import difflib
import inspect
import os

from ..errors import ConfigError, DataError
from .checks import check_labels, check_seed, check_xy, find_duplicates
from .dataset import Dataset, split_dataset, stratified_split
from .digits import load_digits
from .download import cache_dir
from .files import load_file
from .idx import read_idx, write_idx
from .idx_folder import idx_folder_of, load_idx_folder
from .mnist import load_mnist
from .prepare import Standardizer, split_validation, to_unit_range
from .preprocessing import Preprocessing
from .synthetic import GENERATORS, blobs, circles, moons, regression, spirals, xor

#: the dataset names ``load`` knows (a path to a .npz or .csv file works too)
DATASETS = ("digits", "mnist", "fashion-mnist", *GENERATORS)
_ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist"}
_FILE_SUFFIXES = (".npz", ".csv", ".csv.gz", ".h5", ".hdf5")

__all__ = ["Dataset", "DATASETS", "load", "stratified_split", "split_dataset", "load_digits",
           "load_file", "load_mnist", "read_idx", "write_idx", "cache_dir", "spirals", "moons",
           "circles", "xor", "blobs", "regression", "check_xy", "check_labels",
           "find_duplicates", "Standardizer", "to_unit_range", "split_validation",
           "load_idx_folder", "Preprocessing"]


def _call(fn, what: str, /, *args, **kwargs):
    """``fn(*args, **kwargs)``, turning an unknown option into a ConfigError that lists them."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        params = [p for p in inspect.signature(fn).parameters][len(args):]
        raise ConfigError(f"{what}: {exc}; its options are {', '.join(params)}") from None
    return fn(*args, **kwargs)


def load(name, *, data_dir=None, seed: int = 0, download: bool = True, quiet: bool = False,
         **kwargs) -> Dataset:
    """Load a dataset by name (see ``DATASETS``) or from a ``.npz`` / ``.csv`` / ``.h5`` path.

    Parameters
    ----------
    name : "digits", "mnist", "fashion-mnist", "spirals", "moons", "circles",
        "xor", "blobs", "regression", a path to a .npz / .csv / .h5 file, or a
        folder of IDX files (``dir``, or ``dir/<set>`` for one of several sets)
    data_dir : where MNIST-format files are cached (default ``$NNX_DATA_DIR``
        or ``~/.cache/nnx``)
    seed : seeds the synthetic data and every train/test split
    download : whether missing MNIST files may be downloaded
    quiet : no download progress bar
    **kwargs : options of the loader, e.g. ``n=500, noise=0.2`` for spirals,
        ``test_fraction=0.3``, ``mirrors=[...]`` for MNIST, ``task="regression"``
        for a file or folder whose labels would be read as classes (a built-in
        dataset takes only its own task)

    Raises ConfigError for an unknown name or option, DataError for bad data or a
    file that cannot be read (naming the file and the reason).
    """
    seed = check_seed(seed)
    try:
        return _load(name, data_dir, seed, download, quiet, **kwargs)
    except OSError as exc:  # a path the system refuses: too long, not a directory, ...
        where = f" {exc.filename}" if exc.filename else ""
        raise DataError(f"cannot read dataset {name!s}:{where}: {exc.strerror or exc}; check "
                        "--dataset and --data-dir") from None


def _load(name, data_dir, seed: int, download: bool, quiet: bool, task=None,
          **kwargs) -> Dataset:
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    key = text.strip().lower()
    key = _ALIASES.get(key, key)
    folder = idx_folder_of(text) if key not in DATASETS else None
    if folder is not None:
        return _call(load_idx_folder, text, *folder, seed=seed, task=task, **kwargs)
    is_file = (isinstance(name, os.PathLike) or key.endswith(_FILE_SUFFIXES) or os.sep in text
               or "/" in text or os.path.isfile(text))
    if is_file and key not in DATASETS:
        return _call(load_file, text, text, seed=seed, task=task, **kwargs)
    ds = _builtin(key, text, data_dir, seed, download, quiet, **kwargs)
    if task is not None and task != ds.task:
        raise ConfigError(f"dataset {ds.name} is a {ds.task} dataset; --task {task} applies "
                          "to your own files and IDX folders only")
    return ds


def _builtin(key: str, text: str, data_dir, seed: int, download: bool, quiet: bool,
             **kwargs) -> Dataset:
    if key == "digits":
        return _call(load_digits, "digits", seed=seed, **kwargs)
    if key in ("mnist", "fashion-mnist"):
        return _call(load_mnist, key, key, data_dir, download=download, quiet=quiet, **kwargs)
    if key in GENERATORS:
        return _call(GENERATORS[key], key, seed=seed, **kwargs)
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown dataset {text!r}{hint}; valid datasets are: "
                      f"{', '.join(DATASETS)}, a path to a .npz (arrays x, y), .csv or .h5 "
                      "file, or a folder of IDX files")
