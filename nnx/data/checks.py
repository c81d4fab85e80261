"""The data checks, on the host: one for ``x`` and ``y``, one for labels, one duplicate finder.

The duplicate finder lives in :mod:`nnx.data.duplicates` and is re-exported here.

The loaders, the Trainer and the doctor all call these, so a dataset is
judged by the same rules wherever it comes from. Every problem is a
:class:`~nnx.errors.DataError` whose message starts with where the data came
from (``"training data"``, a file name) and says what is wrong, in which
row, and what to do.

The rules for ``y``:

- classification labels, shape ``(n,)`` or ``(n, 1)``: whole numbers
  ``0..C-1`` (integers, booleans, or floats that hold whole numbers);
- rows of shape ``(n, C)``, ``C > 1``: for softmax cross-entropy, and for a
  loader (which knows the task but not yet the loss), each row is a
  distribution over the classes: values ``>= 0`` summing to 1 (one-hot or
  soft labels). A loader turns them into labels by argmax; a loss takes
  them as they are;
- sigmoid binary cross-entropy: each output is its own yes/no probability,
  so targets are 0/1 labels or probabilities in ``[0, 1]``, of shape
  ``(n,)`` or ``(n, 1)`` for one output and ``(n, k)`` for ``k`` outputs;
  rows need not sum to 1;
- regression targets, shape ``(n,)`` or ``(n, k)``: finite numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..arguments import check_seed  # noqa: F401  (one rule for seeds; used by the loaders)
from ..errors import ConfigError, DataError
from .dataset import TASKS
from .duplicates import Duplicates, find_duplicates

__all__ = ["Checked", "check_xy", "check_x_shape", "check_labels", "check_seed", "to_host",
           "whole_number_example", "Duplicates", "find_duplicates"]

_BINARY = "sigmoid_binary_cross_entropy"


class Checked(NamedTuple):
    """What :func:`check_xy` returns: ``x, y, from_one_hot = check_xy(...)``."""

    x: np.ndarray
    y: np.ndarray
    from_one_hot: bool


def to_host(a, backend=None, what: str = "data") -> np.ndarray:
    """A host NumPy array from a NumPy array, nested lists, or an array of ``backend``'s
    device. Anything that is not an array of numbers is a DataError naming ``what``."""
    if isinstance(a, np.ndarray):
        return a
    from array_api_compat import array_namespace, is_numpy_array

    try:
        if backend is not None and not is_numpy_array(a):
            try:
                array_namespace(a)
            except TypeError:  # lists, scalars: not an array library's array
                return np.asarray(a)
            return np.asarray(backend.to_numpy(a))
        return np.asarray(a)
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{what} is not a numeric array ({detail}); pass a NumPy array, "
                        "nested lists of numbers or an array on the trainer's device") from None



def _loss(loss):
    if loss is None or hasattr(loss, "task"):
        return loss
    from ..losses import get_loss

    return get_loss(loss)


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def _float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f" or dt.itemsize < 4:
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def check_xy(x, y, task: str | None = None, n_classes: int | None = None,
             where: str = "training data", *, loss=None, input_shape: tuple | None = None,
             n_out: int | None = None, dtype="float32") -> Checked:
    """Validate a pair of host arrays and return them in the dtypes nnx trains on.

    Parameters
    ----------
    x : array of shape (n, features), or (n, *input_shape), numeric
    y : labels, probability rows or regression targets (see the module's rules)
    task : "classification" or "regression"; taken from ``loss`` when omitted
    n_classes : the number of classes, when known (labels must be below it)
    where : how messages name this data, e.g. "test data" or a file name
    loss : the loss (object or name) the data is for, when known: it decides how
        ``(n, C)`` rows are read and keeps them as they are (a loader, without a
        loss, turns one-hot rows into labels)
    input_shape : the model's per-example input shape, when known: ``(n_in,)``, or
        ``(height, width, channels)`` for images; None: ``x`` is (n, features)
    n_out : the model's output count, when known
    dtype : the float dtype of the returned ``x`` (and of float ``y``)

    Returns
    -------
    Checked(x, y, from_one_hot): ``x`` (n, features) in ``dtype``; ``y`` int64
    labels (n,), or ``dtype`` probabilities (n, C) or targets (n, k);
    ``from_one_hot`` True when one-hot rows were turned into labels.

    Raises DataError naming the problem, the row and what to do; ConfigError for
    an unknown task or a task that is not the loss's.
    """
    loss = _loss(loss)
    task = _task(task, loss)
    dt = _float_dtype(dtype)
    x, y = np.asarray(x), np.asarray(y)
    _check_shapes(x, y, where, input_shape)
    x = _finite_x(x, where, dt)
    n = x.shape[0]
    if task == "regression":
        return Checked(x, _targets(y, n, where, n_out, dt), False)
    y, from_one_hot = check_labels(y, where, loss=loss, n_classes=n_classes, n_out=n_out)
    return Checked(x, y if y.dtype.kind == "i" else y.astype(dt), from_one_hot)


def _task(task, loss) -> str:
    if task is None and loss is not None:
        return loss.task
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if loss is not None and loss.task != task:
        raise ConfigError(f"loss {loss.name} is for {loss.task}, not {task}")
    return task


def _check_shapes(x: np.ndarray, y: np.ndarray, where: str, input_shape) -> None:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: y must be numeric, got dtype {y.dtype}")
    check_x_shape(x.shape, f"{where}: x", input_shape)
    if y.ndim == 0 or y.ndim > 2:
        raise DataError(f"{where}: y must have one entry (or row) per example, got shape "
                        f"{y.shape}")
    n = x.shape[0]
    if y.shape[0] != n:
        raise DataError(f"{where}: x has {n} rows but y has {y.shape[0]}; y needs one entry "
                        "(or row) per row of x")
    if n == 0:
        raise DataError(f"{where} is empty: x and y have 0 rows")
    if x.ndim == 2 and x.shape[1] == 0:
        raise DataError(f"{where}: x has 0 features (shape {x.shape})")


def check_x_shape(shape: tuple, what: str = "x", input_shape: tuple | None = None) -> None:
    """Raise DataError unless an array of ``shape`` is ``(n, *input_shape)``.

    ``input_shape`` None or ``(n_in,)`` asks for ``(n, features)``;
    ``(height, width, channels)`` for images. ``what`` names the array in the message.
    """
    shape = tuple(int(s) for s in shape)
    if input_shape is not None and len(input_shape) == 3:
        if shape[1:] != tuple(input_shape):
            h, w, c = input_shape
            hint = (f"; reshape flattened rows with x.reshape(-1, {h}, {w}, {c})"
                    if len(shape) == 2 and shape[1] == h * w * c else "")
            raise DataError(f"{what} has shape {shape} but the model takes images "
                            f"(n, {h}, {w}, {c}){hint}")
        return
    if len(shape) != 2:
        hint = ("; for one feature use x.reshape(-1, 1)" if len(shape) == 1 else
                "; flatten images with x.reshape(len(x), -1), or give the model "
                "input_shape=(height, width, channels) to train on images" if len(shape) == 4
                else "; flatten images with x.reshape(len(x), -1)" if len(shape) > 2 else "")
        raise DataError(f"{what} must be 2-D (examples, features), got shape {shape}{hint}")
    n_in = input_shape[0] if input_shape else None
    if n_in is not None and shape[1] != n_in:
        raise DataError(f"{what} has {shape[1]} features but the model expects {n_in}; "
                        "check the dataset or the model's first layer")


def _finite_x(x: np.ndarray, where: str, dt: np.dtype) -> np.ndarray:
    """``x`` in ``dt``; NaN, infinite or too large for ``dt`` is a DataError."""
    bad = ~np.isfinite(x) if x.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise DataError(f"{where}: x contains {int(bad.sum())} NaN or infinite values (first "
                        f"in row {_first_bad_row(bad)}); clean or impute them")
    with np.errstate(over="ignore"):
        out = x.astype(dt, copy=False)
    if x.dtype.kind == "f" and x.dtype.itemsize > dt.itemsize:
        over = ~np.isfinite(out)
        if over.any():
            raise DataError(f"{where}: x holds {int(over.sum())} values too large for "
                            f"{dt.name} (first in row {_first_bad_row(over)}); rescale the "
                            "features")
    return out


def _targets(y: np.ndarray, n: int, where: str, n_out, dt: np.dtype) -> np.ndarray:
    """Regression targets (n, k) in ``dt``."""
    yf = y.astype(np.float64)
    bad = ~np.isfinite(yf)
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} regression targets are NaN or infinite "
                        f"(first in row {_first_bad_row(bad)}); drop or fix those rows")
    with np.errstate(over="ignore"):
        out = yf.reshape(n, -1).astype(dt)
    over = ~np.isfinite(out)
    if over.any():
        raise DataError(f"{where}: {int(over.sum())} regression targets are too large for "
                        f"{dt.name} (first in row {_first_bad_row(over)}); rescale them")
    if n_out is not None and out.shape[1] != n_out:
        raise DataError(f"{where}: y has {out.shape[1]} target column(s) but the model has "
                        f"{n_out} output(s); make them match")
    return out


# --- labels ---------------------------------------------------------------------------------


def check_labels(y, where: str = "labels", *, loss=None, n_classes: int | None = None,
                 n_out: int | None = None) -> tuple[np.ndarray, bool]:
    """Check classification labels or probability rows ``y`` for a loss and an output count.

    Parameters
    ----------
    y : labels (n,) or (n, 1), or rows (n, C) (see the module's rules)
    where : how messages name this data
    loss : the classification loss (object or name), or None (rows are one-hot
        and become labels)
    n_classes : the number of classes, when known; by default ``n_out`` (2 for
        binary cross-entropy with one output)
    n_out : the model's output count, when known

    Returns
    -------
    ``(y, from_one_hot)``: int64 labels (n,), or float64 probabilities (n, k)
    when a loss is given and takes them; ``from_one_hot`` True when one-hot
    rows were turned into labels.
    """
    loss = _loss(loss)
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: y must be numeric, got dtype {y.dtype}")
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise DataError(f"{where}: y must have one entry (or row) per example, got shape "
                        f"{y.shape}")
    if loss is not None and loss.name == _BINARY:
        return _binary_targets(y, where, n_out), False
    if n_classes is None:
        n_classes = n_out
    if y.ndim == 2 and y.shape[1] > 1:
        rows = _distributions(y, where, n_classes, n_out)
        return (rows, False) if loss is not None else (np.argmax(rows, axis=1), True)
    return _labels(y[:, 0] if y.ndim == 2 else y, where, n_classes, n_out), False


def _distributions(y: np.ndarray, where: str, n_classes, n_out) -> np.ndarray:
    """float64 rows (n, C), each non-negative and summing to 1."""
    yf = y.astype(np.float64)
    sums = yf.sum(axis=1)
    bad = ~(np.isfinite(yf).all(axis=1) & (yf >= 0).all(axis=1) & (np.abs(sums - 1.0) <= 1e-4))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: y has shape {y.shape}, so it is read as one-hot rows, but "
                        f"row {i} is {np.array2string(y[i], threshold=12)} (sum {sums[i]:g}); "
                        "pass integer labels of shape (n,) or rows of non-negative values "
                        "summing to 1")
    if n_out is not None and y.shape[1] != n_out:
        raise DataError(f"{where}: y has {y.shape[1]} one-hot columns but the model has "
                        f"{n_out} outputs; pass integer labels (n,) or one column per output")
    if n_classes is not None and y.shape[1] != n_classes:
        raise DataError(f"{where}: y has {y.shape[1]} one-hot columns but there are "
                        f"{n_classes} classes")
    return yf


def _labels(y: np.ndarray, where: str, n_classes, n_out) -> np.ndarray:
    """int64 labels (n,): whole numbers in 0..n_classes-1."""
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
                            "labels must be whole numbers 0, 1, ..., C-1 (continuous targets "
                            "are regression: task='regression', loss='mse')")
    big = np.abs(y.astype(np.float64)) >= 2.0**63  # would wrap around as int64
    if big.any():
        i = int(np.argmax(big))
        raise DataError(f"{where}: label {y[i]:g} in row {i} is out of range; class labels "
                        "must be 0, 1, ..., C-1")
    y = y.astype(np.int64)
    low, high = int(y.min()), int(y.max())
    if low < 0:
        i = int(np.argmax(y == low))
        raise DataError(f"{where}: label {low} in row {i} is negative; class labels must be "
                        "0, 1, ..., C-1 (map -1/1 labels to 0/1)")
    if n_classes is not None and high >= n_classes:
        i = int(np.argmax(y == high))
        model = (f" for a model with {n_out} output(s): check the labels or the size of the "
                 "output layer" if n_out is not None else "")
        shifted = " (labels 1..C? subtract 1: y - 1)" if low == 1 and high == n_classes else ""
        raise DataError(f"{where}: label {high} in row {i} is out of range for {n_classes} "
                        f"classes; labels must be 0..{n_classes - 1}{model}{shifted}")
    return y


def _binary_targets(y: np.ndarray, where: str, n_out) -> np.ndarray:
    """Binary cross-entropy targets: int64 0/1 labels (n,) for one output, else float64
    probabilities (n, k) in [0, 1]."""
    k = n_out if n_out is not None else (y.shape[1] if y.ndim == 2 else 1)
    columns = y.shape[1] if y.ndim == 2 else 1
    if columns != k:
        raise DataError(f"{where}: binary cross-entropy with {k} output(s) takes targets of "
                        f"shape (n, {k}), one 0/1 or probability column per output; got shape "
                        f"{y.shape}" + (f". For one class out of {k} use cross_entropy"
                                        if k > 1 and columns == 1 else ""))
    yf = y.astype(np.float64)
    if k == 1 and (y.dtype.kind != "f" or bool(np.all(yf == np.round(yf)))):
        return _labels(y.reshape(-1), where, 2, n_out)  # whole numbers: 0/1 labels
    bad = ~(np.isfinite(yf) & (yf >= 0) & (yf <= 1))
    if bad.any():
        i = _first_bad_row(bad)
        raise DataError(f"{where}: binary cross-entropy targets must be 0/1 labels or "
                        f"probabilities in [0, 1]; row {i} is "
                        f"{np.array2string(np.asarray(y[i]), threshold=12)}")
    return yf.reshape(y.shape[0], k)


def whole_number_example(y) -> float | None:
    """The first value of ``y`` that is not a finite whole number, or None."""
    flat = np.asarray(y, dtype=np.float64).reshape(-1)
    odd = flat[(flat != np.round(flat)) | ~np.isfinite(flat)]
    return float(odd[0]) if odd.size else None
