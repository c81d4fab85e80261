"""The user's own data: ``.npz`` and ``.csv`` files.

``.npz``: arrays ``x`` (n, features) or images (n, h, w, ...) that are
flattened, and ``y``; optionally ``x_test`` and ``y_test``. Read with
``allow_pickle=False``. uint8 ``x`` is scaled to [0, 1].

``.csv`` (or ``.csv.gz``): numbers separated by commas, one example per row,
the label in the last column; with a header row, a column named ``label``,
``target``, ``class`` or ``y`` is the label wherever it is.

Labels may be text (a CSV column of names, an ``.npz`` array of str, bytes in
HDF5): the classes are the distinct names in sorted order, label ``i`` is
``meta["class_names"][i]``, and a model trained on them predicts the names.

The task is inferred from ``y`` unless given (``task=``, ``--task``): text and
integer labels, or whole numbers in one column, mean classification; other
floats and several columns that are not one-hot mean regression. Whole-number
targets of a regression (counts, prices, years) need ``task="regression"``.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import ConfigError, DataError
from .checks import check_labels, check_seed, check_xy
from .dataset import TASKS, Dataset, as_generator, split_dataset
from .prepare import to_unit_range

#: header names taken as the label column, in order of preference
LABEL_COLUMNS = ("label", "target", "class", "y")


def _guess_task(y: np.ndarray) -> str:
    if y.dtype.kind not in "biuf":  # not numbers: check_xy names the problem
        return "classification"
    if y.ndim == 2 and y.shape[1] > 1:
        yf = y.astype(np.float64)
        one_hot = np.isin(yf, (0.0, 1.0)).all() and np.all(yf.sum(axis=1) == 1.0)
        return "classification" if one_hot else "regression"
    if y.dtype.kind in "biu":
        return "classification"
    flat = y.reshape(-1).astype(np.float64)
    whole = np.isfinite(flat).all() and np.all(flat == np.round(flat))
    return "classification" if whole else "regression"


def _prepare_x(x: np.ndarray, path: str, meta: dict) -> np.ndarray:
    if x.ndim > 2:
        meta.setdefault("image_shape", tuple(x.shape[1:]))
        x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # -1 fails for 0 rows
    if x.dtype == np.uint8:
        meta["pixel_scale"] = 255.0
        x = to_unit_range(x)
    return x


def _is_text(y) -> bool:
    return np.asarray(y).dtype.kind in "USO"


def _text(y: np.ndarray) -> np.ndarray:
    """Labels as stripped str (bytes decoded as UTF-8)."""
    y = np.asarray(y)
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8", "replace")
    return np.char.strip(y.astype(str))


def encode_text_labels(path: str, y, test, names: list | None, task: str | None):
    """Text labels -> int64 class indices, with the sorted distinct names as the classes
    (of the training and test labels together); numeric ``y`` passes through.

    Returns ``(y, test, class names or the given ``names``)``.
    """
    text_test = test is not None and _is_text(test[1])
    if not _is_text(y) and not text_test:
        return y, test, names
    if task == "regression":
        raise DataError(f"{path}: the labels are text (e.g. {str(_text(y).reshape(-1)[0])!r}), "
                        "so they cannot be regression targets; drop --task regression")
    if not _is_text(y) or (test is not None and not text_test):
        raise DataError(f"{path}: the training and test labels must both be text or both "
                        "numbers")
    y = _text(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: text labels must be one name per example, got shape {y.shape}")
    every = y if test is None else np.concatenate([y, _text(test[1]).reshape(-1)])
    classes, codes = np.unique(every, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    if test is not None:
        test = (test[0], codes[y.shape[0]:])
    return codes[:y.shape[0]], test, classes.tolist()


def _read_npz(path: str, need_y: bool = True):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise DataError(f"{path} holds object arrays or is damaged ({exc}); save plain "
                        "numeric arrays with np.savez(path, x=x, y=y)") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    if "x" not in arrays or ("y" not in arrays and need_y):
        raise DataError(f"{path} must hold arrays named 'x' and 'y' (found "
                        f"{', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} holds only one of 'x_test' and 'y_test'; store both or neither")
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return arrays["x"], arrays.get("y"), test


#: byte-order marks (Excel and Notepad write them): the encoding they announce
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def _encoding(path: str) -> str:
    """The text encoding of a CSV file: the one its byte-order mark names, else UTF-8
    (``utf-8-sig``: a UTF-8 mark is dropped, never read as part of the first value)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            start = f.read(4)
    except (OSError, EOFError):
        return "utf-8-sig"  # the reader reports the problem
    return next((name for bom, name in _BOMS if start.startswith(bom)), "utf-8-sig")


def _csv_header(path: str) -> list[str] | None:
    """The header's lower-case names, or None. The first row is a header when one of its
    values is not a number where the second row's is (a text label column is not one)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding=_encoding(path)) as f:
        first, second = f.readline(), f.readline()
    cells = [c.strip().strip('"') for c in first.split(",")]
    below = [c.strip().strip('"') for c in second.split(",")] if second.strip() else None
    if below is None:
        is_header = not all(_number(c) for c in cells)
    else:
        is_header = any(not _number(a) and _number(b) for a, b in zip(cells, below))
    return [c.lower() for c in cells] if is_header else None


def _read_csv(path: str, n_features: int | None = None):
    """``(x, y, None)``; ``y`` None when the file has ``n_features`` columns and no label
    column named in its header (features only, for prediction)."""
    header, table = _csv_table(path)
    named = [header.index(c) for c in LABEL_COLUMNS if c in header] if header else []
    if header is not None and len(header) != table.shape[1]:
        raise DataError(f"{path}: the header has {len(header)} names but rows have "
                        f"{table.shape[1]} values")
    if n_features is not None and table.shape[1] == n_features and not named:
        return _numeric_features(path, table, header), None, None
    if table.shape[1] < 2:
        raise DataError(f"{path} needs at least two columns: features, then the label")
    column = named[0] if named else table.shape[1] - 1
    x = _numeric_features(path, np.delete(table, column, axis=1),
                          None if header is None else header[:column] + header[column + 1:])
    y = table[:, column]
    if y.dtype.kind == "U" and all(_number(v) for v in y.tolist()):
        y = y.astype(np.float64)
    return x, y, None


def _csv_table(path: str) -> tuple[list[str] | None, np.ndarray]:
    """The header (or None) and the rows: float64, or str where some value is not a number."""
    try:
        header = _csv_header(path)
        skip = 0 if header is None else 1
        try:
            return header, np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2,
                                      dtype=np.float64, encoding=_encoding(path))
        except ValueError:  # text somewhere: a label column of names, or a bad value
            return header, np.char.strip(np.char.strip(np.loadtxt(
                path, delimiter=",", skiprows=skip, ndmin=2, dtype=str,
                encoding=_encoding(path))), '"')
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a numeric CSV file ({exc}); every row needs the same "
                        "number of comma-separated numbers, the label last") from None


def _numeric_features(path: str, table: np.ndarray, names) -> np.ndarray:
    if table.dtype.kind != "U":
        return table
    try:
        return table.astype(np.float64)
    except ValueError:
        bad = np.vectorize(lambda v: not _number(v))(table)
        row, col = (int(i) for i in np.argwhere(bad)[0])
        where = f"column {names[col]!r}" if names else f"column {col + 1}"
        raise DataError(f"{path} is not a numeric CSV file: row {row + 1}, {where} holds "
                        f"{str(table[row, col])!r}; features must be numbers (only the label "
                        f"column, the last or one named {'/'.join(LABEL_COLUMNS)}, may hold "
                        "text)") from None


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def count_classes(labels: np.ndarray, path: str) -> int:
    """Number of classes for checked int64 labels 0..C-1: a label too large to be a class index is a
    DataError (it would size the output layer); classes without examples are warned about."""
    import warnings

    n_classes = int(labels.max()) + 1
    if n_classes > labels.shape[0]:
        i = int(np.argmax(labels == labels.max()))
        raise DataError(f"{path}: label {int(labels.max())} in row {i} is out of range: "
                        f"{labels.shape[0]} examples cannot cover {n_classes} classes. Class "
                        "labels must be 0, 1, ..., C-1; renumber them (np.unique(y, "
                        "return_inverse=True)). If these numbers are regression targets, "
                        "say so: --task regression (task='regression' in Python)")
    present = np.unique(labels)
    if len(present) < n_classes:
        missing = sorted(set(range(n_classes)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        warnings.warn(f"{path}: labels go up to {n_classes - 1} but classes {shown} have no "
                      f"examples; the model gets {n_classes} outputs. Renumber the labels "
                      "0..C-1 if that is not intended, or if these numbers are regression "
                      "targets pass --task regression (task='regression')", stacklevel=3)
    return n_classes


def load_file(path, *, seed: int = 0, rng=None, test_fraction: float = 0.2,
              task: str | None = None) -> Dataset:
    """Load a ``.npz``, ``.csv`` or ``.h5`` file into a :class:`Dataset`.

    Without stored test arrays, ``test_fraction`` of the rows is held out
    (stratified by label for classification) using ``rng`` or ``seed``.
    ``task`` ("classification" or "regression") overrides the guess from ``y``.
    """
    path = os.fspath(path)
    seed = check_seed(seed)
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist; check the path given to --dataset")
    x, y, test, extra = read_arrays(path)
    y, test, names = encode_text_labels(path, y, test, extra.get("class_names"), task)
    meta = {"source": path, **extra}
    if names is not None:
        meta["class_names"] = names
    x, y, task = _checked(path, x, y, task, names is None, meta)
    classify = task == "classification"
    name = os.path.basename(path)
    if test is None:
        n_classes = count_classes(y, path) if classify else None
        return split_dataset(name, x, y, test_fraction=test_fraction,
                             rng=as_generator(rng, seed), n_classes=n_classes, task=task,
                             meta=meta)
    xt, yt = _test_arrays(path, test, x, y, task)
    n_classes = count_classes(np.concatenate([y, yt]), path) if classify else None
    if names is not None:
        n_classes = max(n_classes, len(names))
    return Dataset(x, y, xt, yt, name, n_classes, task, meta)


def _checked(path: str, x, y, task: str | None, may_guess: bool, meta: dict):
    """``(x, y, task)`` checked by :func:`check_xy`, the task guessed from ``y`` unless given;
    pixels scaled and images flattened into ``meta``'s record."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(f"{path}: x and y must be arrays with one row per example, got shapes "
                        f"{x.shape} and {y.shape}")
    guessed = task is None and may_guess
    task = task or _guess_task(y)
    try:
        x, y, meta["one_hot"] = check_xy(_prepare_x(x, path, meta), y, task, where=path)
    except DataError as exc:
        if guessed and task == "classification":
            _labels_or_targets(exc, y)
        raise
    return x, y, task


def _labels_or_targets(exc: DataError, y: np.ndarray) -> None:
    """When numbers guessed to be class labels cannot be labels, raise ``exc`` saying how to
    read them as regression targets instead."""
    if y.dtype.kind not in "biuf" or y.size == 0:
        return
    try:
        check_labels(y)
    except DataError:
        raise DataError(f"{exc}. If y holds regression targets, say so: --task regression "
                        "(task='regression' in Python)") from None


def read_arrays(path: str, n_features: int | None = None):
    """``(x, y, test or None, extra)`` from a file as stored (nothing scaled or checked), by
    its suffix; ``extra`` is what a reader knows beyond the arrays (class names). For
    prediction, ``n_features`` lets ``y`` be None: an ``.npz`` without ``y``, a ``.npy``
    of ``x``, a ``.csv`` of ``n_features`` columns."""
    lower = path.lower()
    if n_features is not None and lower.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False), None, None, {}
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .npy file of numbers ({exc})") from None
    if lower.endswith(".npz"):
        return (*_read_npz(path, need_y=n_features is None), {})
    if lower.endswith((".csv", ".csv.gz")):
        return (*_read_csv(path, n_features), {})
    if lower.endswith((".h5", ".hdf5")):
        from .hdf5 import read_hdf5

        return read_hdf5(path)
    raise DataError(f"{path}: unknown file type; use .npz (arrays x, y), .csv (label in "
                    "the last column) or .h5 (datasets x, y)")


def _test_arrays(path: str, test, x: np.ndarray, y: np.ndarray, task: str):
    """The file's own test arrays, checked like the training arrays and against them."""
    xt, yt = np.asarray(test[0]), np.asarray(test[1])
    if xt.ndim == 0 or yt.ndim == 0:
        raise DataError(f"{path}: x_test and y_test must be arrays, got shapes {xt.shape} and "
                        f"{yt.shape}")
    xt, yt, _ = check_xy(_prepare_x(xt, path, {}), yt, task, where=f"{path} (test arrays)")
    if xt.shape[1] != x.shape[1]:
        raise DataError(f"{path}: x has {x.shape[1]} features but x_test has {xt.shape[1]}")
    if task != "classification" and yt.shape[1] != y.shape[1]:
        raise DataError(f"{path}: y has {y.shape[1]} target columns but y_test has "
                        f"{yt.shape[1]}")
    return xt, yt
