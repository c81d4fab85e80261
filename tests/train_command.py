"""The train command as a user runs it, in a subprocess: shared by the command-line tests.

``train`` runs ``scripts/train.py`` (or ``python -m nnx``) in a working directory of the
test's choosing; the other helpers read back what a run printed or wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "train.py")


def train(args, cwd, env=None, *, module=False, timeout=180):
    """Run the train command with ``args`` in ``cwd``; ``env`` adds to the environment."""
    head = [sys.executable, "-m", "nnx"] if module else [sys.executable, SCRIPT]
    full = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*head, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full)


def ok(r):
    """``r``, after checking that the run succeeded without a traceback."""
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def error_line(r, words) -> str:
    """The one ``error:`` line of a run that ended with exit status 2, holding ``words``;
    every other line on stderr is a ``warning:``."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), r.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    return errors[0]


def weights(path) -> dict:
    """The parameters saved in a model or checkpoint file: ``{"param/...": array}``."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def wait_for(predicate, proc, timeout=60.0) -> bool:
    """Poll ``predicate`` until it holds, ``proc`` ends or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.005)
    return False


def csv_rows(path) -> int:
    """Data rows of a metrics CSV written so far (0 before it exists)."""
    try:
        return len(Path(path).read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0
