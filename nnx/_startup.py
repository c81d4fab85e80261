"""Ctrl-C while nnx starts: one line and exit status 130, not the traceback of an import.

Importing nnx takes a moment (NumPy, the array libraries). ``nnx/__init__.py``
imports this module first, which sets :data:`sys.excepthook` to a hook that
reports an uncaught ``KeyboardInterrupt`` as one line and ends the process with
exit status 130; every other exception goes to the previous hook. When the
import is done (:func:`imported`) the previous hook comes back, unless the
command line asked to keep it (:func:`keep`, from :mod:`nnx.cli`): a program
that imports nnx sees no change once the import returned.
"""

from __future__ import annotations

import os
import sys

_previous = sys.excepthook
_kept = False


def _hook(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        try:
            sys.stderr.write("aborted by Ctrl-C while starting\n")
            sys.stderr.flush()
        finally:
            os._exit(130)  # the status of Ctrl-C; an excepthook cannot choose it otherwise
    _previous(kind, value, traceback)


def imported() -> None:
    """The import of nnx is done: the previous hook comes back (unless :func:`keep`)."""
    if sys.excepthook is _hook and not _kept:
        sys.excepthook = _previous


def keep() -> None:
    """The command line: an uncaught Ctrl-C stays one line and exit status 130."""
    global _kept
    _kept = True
    sys.excepthook = _hook


if sys.excepthook is _previous:
    sys.excepthook = _hook
