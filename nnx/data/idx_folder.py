"""A folder of the user's own IDX files: MNIST subsets, KMNIST, EMNIST and the like.

``--dataset path/to/dir`` (``nnx.data.load("path/to/dir")``) reads the IDX
files in a folder, plain or gzip-compressed, found by name: ``train`` or
``test``/``t10k`` says the split, ``idx1`` (or ``labels``) the labels and
``idx2``-``idx4`` (or ``images``) the images. The text before the split is the
set's name, so one folder may hold several sets (EMNIST's
``emnist-letters-train-images-idx3-ubyte.gz`` and
``emnist-digits-train-...``): choose one with ``--dataset dir/emnist-letters``.
An EMNIST ``<set>-mapping.txt`` (label, character code) names the classes.

The structure is checked: magic number, dimensions and sizes (by
:func:`~nnx.data.read_idx`), one label per image, the same image shape in both
splits, integer labels that fit the classes. No checksum is checked: these
are the user's files (SHA-256 verification is for the canonical downloads,
:mod:`nnx.data.mnist`). Without test files, ``test_fraction`` of the training
files is held out. uint8 images are divided by 255 and flattened.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .checks import check_xy
from .dataset import Dataset, as_generator, split_dataset
from .idx import read_idx

__all__ = ["find_idx_sets", "read_idx_set", "load_idx_folder", "idx_folder_of"]

_IDX = re.compile(r"idx(\d)")
_SPLIT = re.compile(r"train|t10k|test")


def find_idx_sets(folder) -> dict[str, dict[str, Path]]:
    """``{set name: {"train_images": path, "train_labels": ..., "test_images": ...,
    "test_labels": ...}}`` for the IDX files in ``folder`` (MNIST's names give set ``""``).
    Of two copies of a file (``.gz`` and plain) the plain one is used."""
    sets: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(folder).iterdir(), key=lambda p: (p.name.endswith(".gz"), p.name)):
        lower = path.name.lower()
        dims, split = _IDX.search(lower), _SPLIT.search(lower)
        if not path.is_file() or dims is None or split is None:
            continue
        kind = "labels" if dims.group(1) == "1" or "label" in lower else "images"
        role = f"{'train' if split.group() == 'train' else 'test'}_{kind}"
        name = lower[:split.start()].rstrip("-_. ")
        sets.setdefault(name, {}).setdefault(role, path)
    return sets


def idx_folder_of(text: str) -> tuple[Path, str | None] | None:
    """``(folder, set name)`` when ``text`` names a folder (set None) or a set inside one
    (``dir/emnist-letters``); None otherwise."""
    path = Path(text).expanduser()
    if path.is_dir():
        return path, None
    if path.parent.is_dir() and not path.exists() and path.name:
        if path.name.lower().rstrip("-_. ") in find_idx_sets(path.parent):
            return path.parent, path.name.lower().rstrip("-_. ")
    return None


def _choose(folder: Path, sets: dict, name: str | None) -> tuple[str, dict]:
    if name is not None:
        return name, sets[name]
    if not sets:
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise DataError(f"{folder} holds no IDX files nnx recognises (found: "
                        f"{', '.join(found) or 'nothing'}). Names need the split (train, test "
                        "or t10k) and the kind (idx3 images, idx1 labels), e.g. "
                        "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz")
    if len(sets) > 1:
        names = ", ".join(sorted(n or "(unnamed)" for n in sets))
        first = sorted(n for n in sets if n)[0]
        raise DataError(f"{folder} holds several IDX datasets ({names}); choose one, e.g. "
                        f"--dataset {folder / first}")
    return next(iter(sets.items()))


def _pair(files: dict, split: str, folder: Path, name: str):
    images, labels = files.get(f"{split}_images"), files.get(f"{split}_labels")
    if images is None or labels is None:
        have = ", ".join(p.name for p in files.values())
        need = "images (idx3)" if images is None else "labels (idx1)"
        raise DataError(f"{folder}: the {split} {need} file of IDX set {name or '(unnamed)'} is "
                        f"missing (found {have}); add it, or remove the other {split} file")
    x, y = read_idx(images, advice=None), read_idx(labels, advice=None)
    if x.ndim < 2:
        raise DataError(f"{images} holds a {x.ndim}-D array of shape {x.shape}; images are "
                        "(n, height, width) or (n, features): is it a label file?")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{labels} holds shape {y.shape}; labels are one number per image "
                        "(an idx1 file): is it an image file?")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images.name} holds {x.shape[0]} images but {labels.name} holds "
                        f"{y.shape[0]} labels: the labels do not belong to these images")
    return x, y, (images, labels)


def _class_names(folder: Path, name: str, n_classes: int) -> list[str] | None:
    """EMNIST's ``<set>-mapping.txt``: ``label code`` per line, code a character's number."""
    mapping = folder / f"{name}-mapping.txt" if name else folder / "mapping.txt"
    if not mapping.is_file():
        return None
    try:
        table = np.loadtxt(mapping, dtype=np.int64, ndmin=2)
        codes = {int(label): chr(int(code)) for label, code in table[:, :2]}
    except (ValueError, OSError, OverflowError, IndexError) as exc:
        raise DataError(f"{mapping} is not a mapping of 'label character-code' lines "
                        f"({exc})") from None
    return [codes.get(i, str(i)) for i in range(n_classes)]


def read_idx_set(folder, name: str | None = None):
    """The arrays of IDX set ``name`` (None: the only one) of ``folder``, as stored and
    checked for structure: ``(name, (x, y), (x_test, y_test) or None, files used)``."""
    folder = Path(folder)
    name, files = _choose(folder, find_idx_sets(folder), name)
    x, y, used = _pair(files, "train", folder, name)
    test = None
    if "test_images" in files or "test_labels" in files:
        xt, yt, used_test = _pair(files, "test", folder, name)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{folder}: training images are {x.shape[1:]} but test images are "
                            f"{xt.shape[1:]}; both splits need the same image shape")
        test, used = (xt, yt), used + used_test
    return name, (x, y), test, used


def load_idx_folder(folder, name: str | None = None, *, seed: int = 0, rng=None,
                    test_fraction: float = 0.2, task: str | None = None) -> Dataset:
    """Load the IDX set ``name`` (None: the only one) of ``folder`` into a Dataset.

    Returns ``x`` float32 (n, features), uint8 pixels divided by 255, and
    int64 labels (n,) (float targets with ``task="regression"``);
    ``meta["image_shape"]`` is each image's shape.
    """
    from .files import count_classes

    folder = Path(folder)
    name, (x, y), test, used = read_idx_set(folder, name)
    task = task or ("classification" if y.dtype.kind in "iub" else "regression")
    meta = {"source": str(folder), "image_shape": tuple(x.shape[1:]),
            "files": [str(p) for p in used]}
    if x.dtype == np.uint8:
        meta["pixel_scale"] = 255.0
    arrays = []
    for xs, ys, where in ((x, y, "training"), *([(*test, "test")] if test else [])):
        flat = xs.reshape(xs.shape[0], -1)
        flat = flat.astype(np.float32) / np.float32(255) if xs.dtype == np.uint8 else flat
        arrays.append(check_xy(flat, ys, task, where=f"{folder} ({where} files)")[:2])
    label = f"{folder.name}/{name}" if name else folder.name
    n_classes = (count_classes(np.concatenate([a[1] for a in arrays]), str(folder))
                 if task == "classification" else None)
    if n_classes is not None:
        names = _class_names(folder, name, n_classes)
        if names is not None:
            meta["class_names"] = names
    if test is None:
        return split_dataset(label, *arrays[0], test_fraction=test_fraction,
                             rng=as_generator(rng, seed), n_classes=n_classes, task=task,
                             meta=meta)
    return Dataset(*arrays[0], *arrays[1], label, n_classes, task, meta)
