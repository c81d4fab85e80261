"""Checking training data on the host and moving it to the device once.

Works on host arrays through the NumPy backend's namespace, so the checks are
the same whatever device trains. Every problem is a :class:`DataError` saying
what is wrong, where (which set, which row) and what to do.
"""

from __future__ import annotations

from .. import backends
from ..errors import ConfigError, DataError

__all__ = ["check_xy", "to_device_xy", "split_validation"]


def _host_xp():
    return backends.get("numpy").xp


def _host(trainer, a, what):
    """A host array from NumPy input, nested lists or a device array."""
    from array_api_compat import array_namespace

    try:
        if array_namespace(a) is not _host_xp():
            return trainer.backend.to_numpy(a)
    except TypeError:
        pass
    try:
        return _host_xp().asarray(a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} is not a numeric array ({exc})") from None


def check_xy(trainer, x, y, where: str):
    """Validate ``x`` ``(n, n_in)`` and ``y`` for the trainer's model and loss.

    Returns host ``(x, y)``: ``y`` as int64 labels ``(n,)`` (classification with
    labels), float one-hot/soft labels ``(n, C)``, or float targets ``(n, k)``
    (regression). Raises :class:`DataError` naming the problem.
    """
    xp = _host_xp()
    x, y = _host(trainer, x, f"{where} x"), _host(trainer, y, f"{where} y")
    if x.ndim != 2:
        raise DataError(f"{where}: x must be 2-D (examples, features), got shape {x.shape}; "
                        "flatten images with x.reshape(len(x), -1)")
    n = x.shape[0]
    if n == 0:
        raise DataError(f"{where} is empty: x has 0 rows")
    if y.ndim == 0 or y.ndim > 2 or y.shape[0] != n:
        raise DataError(f"{where}: x has {n} rows but y has shape {y.shape}; y needs one "
                        "entry (or row) per row of x")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    n_in = trainer.model.n_in
    if n_in is not None and x.shape[1] != n_in:
        raise DataError(f"{where}: x has {x.shape[1]} features but the model expects {n_in}; "
                        "check the dataset or the model's first layer")
    bad = ~xp.isfinite(xp.astype(x, xp.float64))
    if bool(xp.any(bad)):
        rows = xp.any(bad, axis=1)
        raise DataError(f"{where}: x contains {int(xp.sum(bad))} NaN or infinite values "
                        f"(first in row {int(xp.argmax(rows))}); clean or impute them")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: y must be numeric, got dtype {y.dtype}")
    loss, n_out = trainer.loss, trainer.model.n_out
    if loss.task != "classification":
        y = xp.astype(y, xp.float64)
        if not bool(xp.all(xp.isfinite(y))):
            i = int(xp.argmax(xp.any(~xp.isfinite(xp.reshape(y, (n, -1))), axis=1)))
            raise DataError(f"{where}: regression targets must be finite; row {i} is not")
        y = y if y.ndim == 2 else y[:, None]
        if n_out is not None and y.shape[1] != n_out:
            raise DataError(f"{where}: y has {y.shape[1]} target column(s) but the model has "
                            f"{n_out} output(s); make them match")
        return x, y
    if y.ndim == 2 and (y.shape[1] > 1 or (n_out == 1 and y.dtype.kind == "f")):
        # one-hot or soft labels (or binary 0/1 targets in a column)
        if n_out is not None and y.shape[1] != n_out:
            raise DataError(f"{where}: y has {y.shape[1]} columns, the model has {n_out} "
                            "outputs; pass integer labels (n,) or one column per output")
        y = xp.astype(y, xp.float64)
        if not bool(xp.all((y >= 0) & (y <= 1))):
            raise DataError(f"{where}: one-hot or soft labels must lie in [0, 1]")
        return x, y
    y = xp.reshape(y, (-1,)) if y.ndim == 2 else y
    if y.dtype.kind == "f":
        whole = xp.isfinite(y) & (y == xp.round(y))
        if not bool(xp.all(whole)):
            i = int(xp.argmax(~whole))
            raise DataError(f"{where}: labels must be whole numbers; row {i} has {y[i]!r}")
    y = xp.astype(y, xp.int64)
    n_classes = 2 if (n_out == 1 and loss.name == "sigmoid_binary_cross_entropy") else n_out
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or (n_classes is not None and high >= n_classes):
        bad_value = low if low < 0 else high
        i = int(xp.argmax(y == bad_value))
        raise DataError(f"{where}: label {bad_value} in row {i} is out of range; labels must be "
                        f"0..{n_classes - 1} for a model with {n_out} output(s). Check the labels "
                        "or the size of the output layer")
    return x, y


def to_device_xy(trainer, x, y, where: str):
    """Check ``(x, y)`` and copy them to the trainer's device (cast on the host first)."""
    x, y = check_xy(trainer, x, y, where)
    b = trainer.backend
    y_dtype = "int64" if y.dtype.kind in "iu" else trainer.dtype
    return b.asarray(x, trainer.dtype), b.asarray(y, y_dtype)


def split_validation(x, y, fraction: float, task: str, rng):
    """Hold out ``fraction`` of ``(x, y)``: stratified by label for classification.

    Uses :func:`nnx.data.stratified_split` (a random split for regression
    targets). Returns ``(x_train, y_train, (x_val, y_val))`` as host arrays.
    """
    from ..data import stratified_split

    xp = _host_xp()
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), got {fraction}")
    x, y = xp.asarray(x), xp.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"training data: x has shape {x.shape} and y {y.shape}; they need the "
                        "same number of rows")
    n = x.shape[0]
    labels = y
    if task == "classification" and y.ndim == 2:  # one-hot: stratify by the class index
        labels = xp.argmax(y, axis=1) if y.shape[1] > 1 else xp.astype(y[:, 0] > 0.5, xp.int64)
    elif task == "classification" and y.dtype.kind == "f":
        labels = xp.astype(y, xp.int64) if bool(xp.all(y == xp.round(y))) else y
    elif task != "classification":
        labels = xp.astype(y, xp.float64)
    keep, held = stratified_split(labels, fraction, rng)
    if held.shape[0] == 0 or keep.shape[0] == 0:
        raise DataError(f"validation_split={fraction} of {n} examples leaves an empty set; "
                        "use a fraction between 0.05 and 0.5 or pass validation_data")
    return xp.take(x, keep, axis=0), xp.take(y, keep, axis=0), (xp.take(x, held, axis=0),
                                                                 xp.take(y, held, axis=0))
