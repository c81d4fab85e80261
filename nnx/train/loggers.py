"""Callbacks that report: the progress bar and the per-epoch metrics files.

They only read what the trainer already computed: ``logs`` at the end of an
epoch, and the running loss at a progress-bar refresh (one host read).
"""

from __future__ import annotations

import json
import os
import sys
import time

from .. import atomic
from ..arguments import whole_number
from ..errors import ConfigError
from .hooks import Callback

__all__ = ["ProgressBar", "CSVLogger", "JSONLinesLogger"]


class ProgressBar(Callback):
    """Progress on ``stream`` (stderr): steps, samples/s and the running loss, per epoch.

    With several ranks only rank 0 draws it; its running loss is rank 0's rows.

    On a terminal the line is redrawn in place every ``refresh`` seconds of
    wall-clock time (or every ``every`` steps, if given); each redraw reads the
    running loss from the device once, never more often. Elsewhere (a log
    file, a pipe) and with ``quiet=True`` it writes one line per epoch and reads
    nothing inside the epoch.
    """

    #: with several ranks, only rank 0 runs it (it prints)
    rank0_only = True

    def __init__(self, refresh: float = 0.5, stream=None, width: int = 24, *,
                 every: int | None = None, quiet: bool = False) -> None:
        if every is not None:
            every = whole_number(every, "ProgressBar every")
        self.refresh, self.every, self.width = refresh, every, width
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_epoch_begin(self, trainer, epoch):
        self.t0 = self.last = time.perf_counter()
        self.epoch, self.done = epoch, 0

    def on_step_end(self, trainer, state):
        if not self.live:
            return
        self.done += 1
        now = time.perf_counter()
        due = (self.done % self.every == 0) if self.every else now - self.last >= self.refresh
        if due:
            self.last = now
            self._draw(trainer, state.batch + 1, now,
                       f"loss {trainer.running_loss():.4f}", end="")

    def on_epoch_end(self, trainer, epoch, logs):
        text = "  ".join(f"{k} {v:.4f}" for k, v in logs.items()
                         if k not in ("lr", "time", "skipped") and isinstance(v, float))
        if logs.get("skipped"):
            text += f"  skipped {logs['skipped']} non-finite steps"
        self._draw(trainer, trainer.steps_per_epoch, time.perf_counter(), text, end="\n")

    def _draw(self, trainer, done, now, text, end):
        steps = trainer.steps_per_epoch
        filled = min(self.width, int(self.width * done / max(steps, 1)))
        bar = ("=" * filled + (">" if filled < self.width else "")).ljust(self.width)
        seen = min(done * trainer.batch_size, trainer.n_train)
        rate = seen / max(now - self.t0, 1e-9)
        line = (f"epoch {self.epoch + 1}/{trainer.epochs} [{bar}] {done}/{steps}  "
                f"{rate:,.0f} samples/s  {text}")
        self.stream.write(("\r\x1b[K" if self.live else "") + line + end)
        self.stream.flush()


class _FileLogger(Callback):
    """One record per epoch appended to ``path``, flushed and fsync-ed.

    ``append=False`` starts a new file. ``append=True`` keeps the file; when the
    trainer resumed from a checkpoint, records of epochs after the checkpoint's
    (written before an interruption) are dropped first, so no epoch appears twice.
    With several ranks only rank 0 writes.
    """

    rank0_only = True

    def __init__(self, path, append: bool = False) -> None:
        self.path, self.append = os.fspath(path), append

    def on_train_begin(self, trainer):
        if not self.append:
            if os.path.lexists(self.path):  # a link is removed, never followed
                os.remove(self.path)
            return
        epochs = trainer.history.history.get("epoch")
        # only a regular file of its own is appended to: not a link, not a hard link
        if atomic.check_own_file(self.path) and epochs:
            self._trim(max(epochs))

    def _trim(self, last_epoch: int) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        kept = [line for line in lines if self._epoch_of(line) is None
                or self._epoch_of(line) <= last_epoch]
        if len(kept) != len(lines):
            atomic.write_bytes(self.path, "".join(kept).encode("utf-8"))

    def _epoch_of(self, line: str) -> int | None:
        raise NotImplementedError

    def _write(self, text: str) -> None:
        atomic.append_text(self.path, text)  # flushed, fsync-ed; refuses links


class CSVLogger(_FileLogger):
    """Append one row of epoch metrics per epoch to a CSV file (header on the first write)."""

    def on_epoch_end(self, trainer, epoch, logs):
        row = {"epoch": epoch + 1, **logs}
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        head = ",".join(row) + "\n" if new else ""
        self._write(head + ",".join(_fmt(v) for v in row.values()) + "\n")

    def _epoch_of(self, line):
        first = line.split(",", 1)[0].strip()
        return int(first) if first.isdigit() else None


class JSONLinesLogger(_FileLogger):
    """Append one JSON object of epoch metrics per epoch (``{"epoch": 1, "loss": ...}``)."""

    def on_epoch_end(self, trainer, epoch, logs):
        self._write(json.dumps({"epoch": epoch + 1, **logs}) + "\n")

    def _epoch_of(self, line):
        try:
            return int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            return None


def _fmt(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def verbose_callbacks(verbose) -> list:
    """The callbacks of ``Trainer.fit(verbose=)``: 1 a progress bar, 2 one line per epoch,
    0 none (as in Keras)."""
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ConfigError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line per "
                          f"epoch), got {verbose!r}")
    return [ProgressBar(quiet=verbose == 2)] if verbose else []
