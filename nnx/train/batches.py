"""Which examples each step sees: the epoch's order and its batches, on the device.

This is the one place that decides it. Each epoch draws one permutation of
the training set from the trainer's host generator (seeded by the run's seed,
so every backend, and every process started with the same seed, draws the
same order), uploads it once, and each step gathers its rows with
``xp.take``. Data-parallel training splits here: every process draws the same
order, and a process takes its share of each global batch.
"""

from __future__ import annotations

import numbers
import warnings

from array_api_compat import array_namespace

from ..errors import ConfigError

__all__ = ["resolve_batch_size", "epoch_order", "Batches"]


def resolve_batch_size(batch_size, n: int) -> int:
    """Examples per step for ``n`` training examples: a positive int, or ``"full"`` (or
    None) for ``n``; a size above ``n`` is ``n``, with a warning."""
    if isinstance(batch_size, str) and batch_size == "full" or batch_size is None:
        return n
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size <= 0:
        raise ConfigError(f"batch size must be a positive integer or 'full', got "
                          f"{batch_size!r}")
    batch_size = int(batch_size)  # a NumPy integer counts
    if batch_size > n:
        warnings.warn(f"batch size {batch_size} is larger than the {n} training examples; "
                      "using full-batch training (one step per epoch)", stacklevel=4)
        return n
    return batch_size


def epoch_order(rng, n: int, backend, shuffle: bool, full: bool):
    """The epoch's example order as a device int64 vector ``(n,)``, or None for the stored
    order (no shuffle, or one full batch: no draw, so ``rng`` does not advance)."""
    if not shuffle or full:
        return None
    return backend.asarray(rng.permutation(n), "int64")


class Batches:
    """The batches of one epoch: batch ``b`` holds rows ``order[b*size:(b+1)*size]``.

    ``x`` ``(n, ...)`` and ``y`` are the device data, ``labels`` ``(n,)`` the
    integer labels used for accuracy (classification; may be ``y`` itself) or
    None. The last batch may be smaller; ``len()`` counts the batches and
    :meth:`batch` gathers one. ``share=(r, k)``: process ``r`` of ``k`` takes rows
    ``r, r + k, r + 2k, ...`` of each batch (data-parallel training).
    """

    def __init__(self, x, y, labels, batch_size: int, order=None, share=(0, 1)) -> None:
        self.x, self.y, self.labels = x, y, labels
        self.n, self.size, self.order = x.shape[0], batch_size, order
        self.rank, self.ranks = share
        self.full = batch_size >= self.n
        self._labels_are_y = labels is y
        self._xp = array_namespace(x)

    def __len__(self) -> int:
        return -(-self.n // self.size)

    def span(self, b: int) -> tuple[int, int]:
        """``(lo, hi)``: batch ``b`` holds positions ``lo`` to ``hi - 1`` of the epoch's order
        (``hi - lo`` examples; data-parallel ranks share them out)."""
        return b * self.size, min((b + 1) * self.size, self.n)  # strict rejects hi > n

    def batch(self, b: int):
        """Device batch ``b``: ``(x, y, labels)``; labels None for regression."""
        if self.full and self.ranks == 1:
            return self.x, self.y, self.labels
        lo, hi = self.span(b)
        step = None
        if self.ranks > 1:  # this process's rows: every ranks-th one from lo + rank
            lo, step = min(lo + self.rank, hi), self.ranks
        idx, xp = None if self.order is None else self.order[lo:hi:step], self._xp

        def pick(a):
            return a[lo:hi:step, ...] if idx is None else xp.take(a, idx, axis=0)

        xb, yb = pick(self.x), pick(self.y)
        if self._labels_are_y:
            return xb, yb, yb
        return xb, yb, None if self.labels is None else pick(self.labels)

    def xy(self, b: int):
        """Device ``(x, y)`` of batch ``b``."""
        xb, yb, _ = self.batch(b)
        return xb, yb
