"""One epoch in progress: what :class:`~nnx.train.trainer.Trainer` steps through.

An epoch holds its batches (:mod:`nnx.train.batches`), its accumulator
(:class:`~nnx.train.metrics.MetricSums`) and its non-finite mode
(:mod:`nnx.train.nonfinite`); :meth:`EpochRun.position` is where an interrupted
epoch continues.
"""

from __future__ import annotations

from dataclasses import dataclass

from .batches import Batches
from .metrics import MetricSums
from .nonfinite import NonFiniteMode

__all__ = ["EpochRun"]


@dataclass
class EpochRun:
    """One epoch in progress: its batches, accumulator and non-finite mode.

    ``start`` is the first batch (past 0 when resuming inside the epoch),
    ``rng_state`` the shuffle generator's state before the epoch's draw.
    """

    epoch: int
    start: int
    batches: Batches
    metrics: MetricSums
    nonfinite: NonFiniteMode
    rng_state: dict

    def position(self, batch: int) -> dict:
        """Where an interrupted epoch continues (``Trainer.interrupted_at``); reads the sums."""
        return {"epoch": self.epoch, "batch": batch, "seen": self.metrics.seen,
                "epoch_rng": self.rng_state,
                "sums": {**self.metrics.state(), **self.nonfinite.state()}}
