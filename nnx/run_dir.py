"""The run directory: every file a training run writes, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import atomic_write
from .errors import ConfigError


class RunDir:
    """``runs/<name>/`` with ``config.json``, ``metrics.csv``, ``metrics.jsonl``,
    ``curves.png``, ``model.npz``, ``checkpoint.npz`` and ``summary.json``."""

    def __init__(self, path: Path, created: tuple[Path, ...] = ()) -> None:
        self.path = path
        self.created = created  # directories this run made, deepest first
        self.config = path / "config.json"
        self.metrics_csv = path / "metrics.csv"
        self.metrics_jsonl = path / "metrics.jsonl"
        self.curves = path / "curves.png"
        self.model = path / "model.npz"
        self.checkpoint = path / "checkpoint.npz"
        self.summary = path / "summary.json"

    @classmethod
    def create(cls, path, resume: bool = False) -> RunDir:
        """Create (or reuse, when resuming) the directory and prove it is writable.

        A path the system refuses (a name too long, a file where a directory should
        be) is a ConfigError naming the path and the reason.
        """
        path = Path(path)
        try:
            return cls._create(path, resume)
        except OSError as exc:
            raise ConfigError(f"cannot write to the output directory {path} "
                              f"({exc.strerror or exc}); choose a writable --out") from None

    @classmethod
    def _create(cls, path: Path, resume: bool) -> RunDir:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output path {path} exists and is not a directory; choose "
                              "another --out")
        if not resume and path.is_dir() and (path / "checkpoint.npz").exists():
            raise ConfigError(f"{path} already holds a run; use --resume {path} to continue "
                              "it, or choose another --out")
        created = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        if resume:
            cls._remove_stale_temporaries(path)
        return cls(path, tuple(created))

    def discard_if_unused(self) -> None:
        """Remove the directories :meth:`create` made, if the run failed before writing to
        them (a mistyped flag leaves no empty ``runs/...`` behind). Never removes a file."""
        for directory in self.created:
            try:
                directory.rmdir()  # only succeeds when empty
            except OSError:
                return

    @staticmethod
    def _remove_stale_temporaries(path: Path) -> None:
        """Delete temporary files left by a run killed during an atomic write (``.name.tmp-PID``
        of a process that is gone): they were never renamed, so nothing reads them."""
        for tmp in path.glob(".*.tmp-*"):
            pid = tmp.name.rsplit(".tmp-", 1)[1].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def write_config(self, resolved: dict, extra: dict | None = None) -> None:
        doc = {"settings": resolved, **(extra or {})}
        atomic_write(self.config, json.dumps(doc, indent=2, default=str).encode("utf-8"))

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.summary, json.dumps(summary, indent=2).encode("utf-8"))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts as alive)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
