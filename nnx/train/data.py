"""Checking training data on the host and moving it to the device once.

Works on host arrays through the NumPy backend's namespace, so the check is the
same whatever device trains.
"""

from __future__ import annotations

import backends

from ..errors import DataError


def _host(trainer, a, what):
    """A host array from NumPy input, nested lists or a device array."""
    host = backends.get("numpy")
    try:
        from array_api_compat import array_namespace

        if array_namespace(a) is not host.xp:
            return trainer.backend.to_numpy(a)
    except TypeError:
        pass
    try:
        return host.xp.asarray(a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} is not a numeric array ({exc})") from None


def check_xy(trainer, x, y, where: str):
    """Validate ``x`` ``(n, n_in)`` and ``y`` for the trainer's model and loss.

    Returns host ``(x, y)`` with ``y`` as int64 labels (classification with
    labels) or float targets. Raises :class:`DataError` naming the problem.
    """
    xp = backends.get("numpy").xp
    x, y = _host(trainer, x, f"{where} x"), _host(trainer, y, f"{where} y")
    if x.ndim != 2:
        raise DataError(f"{where}: x must be 2-D (examples, features), got shape {x.shape}; "
                        "flatten images with x.reshape(len(x), -1)")
    n = x.shape[0]
    if n == 0:
        raise DataError(f"{where} is empty: x has 0 rows")
    if y.shape[0] != n:
        raise DataError(f"{where}: x has {n} rows but y has {y.shape[0]}; they must match")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    n_in = trainer.model.n_in
    if n_in is not None and x.shape[1] != n_in:
        raise DataError(f"{where}: x has {x.shape[1]} features but the model expects {n_in}; "
                        "check the dataset or the model's first layer")
    bad = ~xp.isfinite(x.astype("float64", copy=False))
    if bool(xp.any(bad)):
        rows = xp.any(bad, axis=1)
        raise DataError(f"{where}: x contains {int(xp.sum(bad))} NaN or infinite values "
                        f"(first in row {int(xp.argmax(rows))}); clean or impute them")
    loss, n_out = trainer.loss, trainer.model.n_out
    if loss.task != "classification":
        y = y.astype("float64") if y.dtype.kind in "biuf" else y
        if y.dtype.kind != "f" or not bool(xp.all(xp.isfinite(y))):
            raise DataError(f"{where}: regression targets must be finite numbers")
        return x, (y if y.ndim == 2 else y[:, None])
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot or soft labels
        if y.shape[1] != n_out:
            raise DataError(f"{where}: y has {y.shape[1]} columns, the model has {n_out} "
                            "outputs")
        return x, y.astype("float64")
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.dtype.kind == "f":
        if not bool(xp.all(xp.isfinite(y))) or not bool(xp.all(y == xp.round(y))):
            i = int(xp.argmax(~xp.isfinite(y) | (y != xp.round(y))))
            raise DataError(f"{where}: labels must be whole numbers; row {i} has {y[i]!r}")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    y = y.astype("int64")
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
    """Hold out ``fraction`` of ``(x, y)``, stratified by label for classification.

    Returns ``(x_train, y_train, (x_val, y_val))`` as host arrays.
    """
    xp = backends.get("numpy").xp
    x, y = xp.asarray(x), xp.asarray(y)
    n = x.shape[0]
    if task == "classification" and y.ndim == 1 and y.dtype.kind in "iu":
        val_idx = []
        for c in xp.unique_values(y).tolist():
            members = rng.permutation(xp.nonzero(y == c)[0])
            take = int(round(len(members) * fraction))
            val_idx.extend(members[:take].tolist())
        val = xp.asarray(sorted(val_idx), dtype=xp.int64)
    else:
        val = xp.sort(rng.permutation(n)[: int(round(n * fraction))])
    if val.shape[0] == 0 or val.shape[0] == n:
        raise DataError(f"validation split {fraction} of {n} examples leaves an empty set; "
                        "use a fraction between 0.05 and 0.5")
    mask = xp.ones(n, dtype=xp.bool)
    mask[val] = False
    return x[mask], y[mask], (x[val], y[val])
