"""Metric sums, computed on the device from the step's own forward pass.

Each per-batch function returns a 0-d device array; :class:`MetricSums` adds
them into running sums, the one accumulator of both training and evaluation.
The host reads the sums only at logging points. Counts are integers (exact),
error sums are in the output's dtype.
"""

from __future__ import annotations

import math

from ..backends import array_namespace

__all__ = ["MetricSums", "read_scalar", "metric_names", "labels_of", "correct_count",
           "abs_error_sum", "sq_error_sum"]


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


def read_scalar(x):
    """A 0-d device array as a Python number (a host read: logging points only)."""
    xp = array_namespace(x)
    return int(x) if xp.isdtype(x.dtype, "integral") else float(x)


class MetricSums:
    """Running sums of the loss and metrics over batches, kept on the device.

    ``sums`` holds 0-d device arrays: ``loss`` (batch-mean loss times batch
    size), and ``correct`` (classification) or ``abs`` and, unless the loss
    is the MSE, ``sq`` (regression). ``seen`` counts the examples added (a
    host int: batch sizes are known without reading the device). With
    ``skipping``, batches added with ``keep`` false (skipped non-finite steps)
    add nothing and their examples are counted, on the device, in
    ``sums["skipped_n"]``. Everything is a sum, never a mean, so the sums of
    several processes add up to the sums of their union; means are formed only
    when the host reads them.
    """

    def __init__(self, loss, backend, dtype: str, *, skipping: bool = False) -> None:
        xp, dev = backend.xp, backend.device
        zero = xp.zeros((), dtype=backend.dtype(dtype), device=dev)
        self.classify = loss.task == "classification"
        self.with_sq = not self.classify and loss.name != "mse"
        self.sums = {"loss": zero}
        if self.classify:
            self.sums["correct"] = xp.zeros((), dtype=xp.int64, device=dev)
        else:
            self.sums["abs"] = zero
            if self.with_sq:
                self.sums["sq"] = zero
        if skipping:
            self.sums["skipped_n"] = xp.zeros((), dtype=xp.int64, device=dev)
        self.seen = 0
        self._xp = xp

    def add(self, value, output, target, labels, n: int, keep=None) -> None:
        """Add one batch of ``n`` examples: its mean loss ``value`` (0-d), ``output``
        ``(n, k)``, ``target`` and integer ``labels`` ``(n,)`` (classification).

        ``keep`` (0-d bool on the device; only when ``skipping``) drops the batch
        where false, without a host read."""
        xp, sums = self._xp, self.sums
        if self.classify:
            metrics = {"correct": correct_count(output, labels)}
        else:
            metrics = {"abs": abs_error_sum(output, target)}
            if self.with_sq:
                metrics["sq"] = sq_error_sum(output, target)
        if keep is not None:
            sums["skipped_n"] = sums["skipped_n"] + xp.astype(~keep, xp.int64) * n
            value = xp.where(keep, value, 0.0)
            metrics = {k: xp.where(keep, v, 0 if k == "correct" else 0.0)
                       for k, v in metrics.items()}
        sums["loss"] = sums["loss"] + value * n
        for k, v in metrics.items():
            sums[k] = sums[k] + v
        self.seen += n

    def count(self) -> int:
        """Examples that count towards the means (one host read if batches were dropped)."""
        dropped = self.sums.get("skipped_n")
        return self.seen - (0 if dropped is None else read_scalar(dropped))

    def loss_and_count(self) -> tuple[float, int]:
        """``(loss sum, count)``: one host read (two if batches were dropped)."""
        return read_scalar(self.sums["loss"]), self.count()

    def means(self) -> dict:
        """Host means: ``loss`` and ``accuracy``, or ``loss``, ``mae`` and ``mse`` (NaN
        when nothing counted). One host read per sum."""
        total, count = self.loss_and_count()
        means = {"loss": total / count if count > 0 else math.nan}
        div = max(count, 1)
        if self.classify:
            means["accuracy"] = read_scalar(self.sums["correct"]) / div
        else:
            means["mae"] = read_scalar(self.sums["abs"]) / div
            means["mse"] = read_scalar(self.sums["sq"]) / div if self.with_sq else means["loss"]
        return means

    def state(self) -> dict:
        """The sums as host numbers (a resume point inside an epoch); ``seen`` apart."""
        return {k: read_scalar(v) for k, v in self.sums.items()}

    def load(self, sums: dict, seen: int) -> None:
        """Continue from :meth:`state` output (keys this accumulator does not use are
        ignored) and ``seen`` examples."""
        for k, v in sums.items():
            if k in self.sums:
                self.sums[k] = self.sums[k] + v
        self.seen = int(seen)
