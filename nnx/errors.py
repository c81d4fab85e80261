"""Every exception nnx raises on purpose.

Each message says what was wrong, where, and what to do about it. The command
line prints ``str(error)`` on one line and exits with ``error.exit_code``.
"""

from __future__ import annotations

# Defined beside the registry that raises it, so backends/ never imports nnx.
from .backends._base import BackendUnavailable

__all__ = ["NnxError", "ConfigError", "DataError", "ChecksumError", "BackendUnavailable",
           "DerivativeMismatch", "NonFiniteError", "CheckpointError", "MissingExtra",
           "TrainingInterrupted", "DistributedError", "RankFailed", "WriteError",
           "USER_ERRORS"]


class NnxError(Exception):
    """Base class: a problem the user can fix (exit status 2 on the CLI)."""

    exit_code = 2


class ConfigError(NnxError, ValueError):
    """A bad argument, option, name or configuration value."""


class DataError(NnxError, ValueError):
    """Bad training data: shapes, labels, non-finite values, files."""


class ChecksumError(DataError):
    """A downloaded or cached file does not have the expected SHA-256."""


class DerivativeMismatch(NnxError, ValueError):
    """A derivative disagrees with central differences of its forward."""

    def __init__(self, message: str, *, name: str = "", worst_input=None,
                 expected=None, received=None):
        super().__init__(message)
        self.name = name
        self.worst_input = worst_input
        self.expected = expected
        self.received = received


class NonFiniteError(NnxError, FloatingPointError):
    """A loss, gradient or parameter became NaN or infinite during training."""

    def __init__(self, message: str, *, step: int | None = None,
                 layer: str | None = None):
        super().__init__(message)
        self.step = step
        self.layer = layer


class CheckpointError(NnxError, ValueError):
    """A model or checkpoint file is missing, truncated, corrupt or mismatched."""


class WriteError(NnxError, OSError):
    """A file could not be written: a full disk, no permission, or a link where nnx's own
    file should be. The message names the file and the reason; the previous file, if
    any, is intact."""


class MissingExtra(NnxError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


class DistributedError(NnxError, RuntimeError):
    """A run on several processes cannot go on: a rank stopped answering, the ranks
    disagree (data, seed, resumed with another count), or the engine is missing."""


class RankFailed(DistributedError):
    """Another rank of the run stopped with an error; ``rank`` names it and
    ``exit_code`` is the exit status that rank's error has on the command line."""

    def __init__(self, message: str, *, rank: int, exit_code: int = 2):
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code


class TrainingInterrupted(NnxError):
    """Training stopped on SIGINT after saving a checkpoint (exit status 130)."""

    exit_code = 130


def names_hint(kind: str, name: str, valid) -> str:
    """Message for an unknown ``name`` of ``kind``, listing the valid names."""
    return f"unknown {kind} {name!r}; valid {kind}s are: {', '.join(sorted(valid))}"


#: What the command line reports as a user error (one line, exit status 2).
USER_ERRORS = (NnxError, BackendUnavailable)
