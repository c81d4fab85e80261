"""Per-batch metric sums, computed on the device from the step's own forward pass.

Each function returns a 0-d device array that the trainer adds to a running
sum; the host reads the sums only at logging points. Counts are integers
(exact), error sums are in the output's dtype.
"""

from __future__ import annotations

from array_api_compat import array_namespace

__all__ = ["metric_names", "labels_of", "correct_count", "abs_error_sum", "sq_error_sum"]


def metric_names(loss) -> tuple[str, ...]:
    """Names of the metrics logged beside ``loss`` for this loss's task."""
    return ("accuracy",) if loss.task == "classification" else ("mae", "mse")


def labels_of(y):
    """Integer labels ``(n,)`` from labels, one-hot/soft ``(n, C)`` or binary ``(n, 1)`` targets.

    Called once per dataset (not per step), so each step compares against
    labels directly.
    """
    xp = array_namespace(y)
    if y.ndim == 1:
        return y if xp.isdtype(y.dtype, "integral") else xp.astype(y > 0.5, xp.int64)
    if y.shape[1] == 1:
        return xp.astype(y[:, 0] > 0.5, xp.int64)
    return xp.argmax(y, axis=1)


def correct_count(output, labels):
    """Number of rows of ``output`` ``(batch, C)`` whose prediction equals ``labels`` ``(batch,)``.

    ``C = 1`` is a binary logit (positive means class 1). Returns a 0-d int64 array.
    """
    xp = array_namespace(output)
    if output.shape[1] == 1:
        return xp.count_nonzero((output[:, 0] > 0) == (labels == 1))
    pred = xp.argmax(output, axis=1)
    if pred.dtype != labels.dtype:
        pred = xp.astype(pred, labels.dtype, copy=False)
    return xp.count_nonzero(pred == labels)


def _diff(output, target):
    xp = array_namespace(output)
    if target.ndim == 1:
        target = target[:, None]
    return output - xp.astype(target, output.dtype, copy=False)


def abs_error_sum(output, target):
    """Sum over the batch of the mean absolute error of each row (0-d array)."""
    xp = array_namespace(output)
    return xp.sum(xp.abs(_diff(output, target))) / output.shape[1]


def sq_error_sum(output, target):
    """Sum over the batch of the mean squared error of each row (0-d array)."""
    xp = array_namespace(output)
    d = _diff(output, target)
    return xp.sum(d * d) / output.shape[1]
