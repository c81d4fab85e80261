"""Downloading dataset files safely: temporary file, SHA-256 check, then rename.

A file reaches its final name only after its checksum matched, so nothing
half-downloaded or unverified is ever found in the cache by a later run.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ChecksumError, ConfigError, DataError

USER_AGENT = "nnx (dataset download)"


def cache_dir(data_dir=None) -> Path:
    """``data_dir``, else ``$NNX_DATA_DIR``, else ``~/.cache/nnx`` (not created here)."""
    chosen = data_dir or os.environ.get("NNX_DATA_DIR") or Path.home() / ".cache" / "nnx"
    return Path(chosen).expanduser()


def sha256(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path, expected: str | None) -> None:
    """Raise ChecksumError when the SHA-256 of ``path`` is not ``expected`` (None: no check)."""
    if expected is None:
        return
    got = sha256(path)
    if got != expected.lower():
        raise ChecksumError(f"{path} has SHA-256 {got}, expected {expected}: the file is "
                            "corrupt or not the expected one; delete it and download it again")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


class _Progress:
    """One line on stderr, rewritten at most every 0.2 s: bytes done, total, percent."""

    def __init__(self, name: str, total: int, quiet: bool):
        self.name, self.total, self.quiet, self.last = name, total, quiet, 0.0
        self.open = False  # a line was started and not ended

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self.last < 0.2):
            return
        self.last = now
        line = f"\rdownloading {self.name}: {_size(done)}"
        if self.total:
            line += f" / {_size(self.total)} ({100.0 * done / self.total:5.1f}%)"
        sys.stderr.write(line + ("\n" if final else ""))
        sys.stderr.flush()
        self.open = not final

    def close(self) -> None:
        """End a started line (after a failed download), so the next message starts clean."""
        if self.open:
            sys.stderr.write("\n")
            self.open = False


def _get(url: str, out, name: str, quiet: bool, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        progress, done = _Progress(name, total, quiet), 0
        try:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                done += len(chunk)
                progress.update(done)
        except BaseException:
            progress.close()
            raise
        progress.update(done, final=True)
    if total and done != total:
        raise OSError(f"connection closed after {done} of {total} bytes")


def fetch(name: str, mirrors, directory, checksum: str | None, *, quiet: bool = False,
          timeout: float = 30.0, manual: str | None = None) -> Path:
    """Download ``name`` from the first base URL in ``mirrors`` that serves it intact.

    The body goes to a temporary file in ``directory``, is checked against
    ``checksum`` (SHA-256 hex), and is renamed to ``directory/name`` only then.
    A mismatch deletes the temporary file and tries the next mirror; when none
    worked, raises ChecksumError (some served a bad file) or DataError (none
    could be reached), naming every URL tried and, for placing files by hand,
    ``manual`` (e.g. the names of every file the dataset needs; default ``name``).
    """
    mirrors = list(mirrors)
    if not mirrors:
        raise ConfigError(f"no base URL to download {name} from")
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot use {directory} as the data directory to download {name} "
                        f"into ({exc.strerror or exc}); pass a writable folder with --data-dir "
                        "(data_dir= in Python) or $NNX_DATA_DIR") from None
    failures, bad = [], []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                _get(url, out, name, quiet, timeout)
                out.flush()
                os.fsync(out.fileno())
            got = sha256(tmp)
            if checksum is not None and got != checksum.lower():
                bad.append(f"{url} (SHA-256 {got})")
                continue
            os.replace(tmp, directory / name)
            return directory / name
        except urllib.error.HTTPError as exc:
            failures.append(f"{url} (HTTP {exc.code} {exc.reason})")
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{url} ({getattr(exc, 'reason', None) or exc})")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    tried = "; ".join(bad + failures)
    if bad:
        raise ChecksumError(f"{name} failed its SHA-256 check (expected {checksum}) and was "
                            f"discarded; tried {tried}. Try again later, or place a good copy "
                            f"in {directory}")
    raise DataError(f"could not download {name}: tried {tried}. Without a network, download "
                    f"{manual or name} by hand from one of those addresses and put them in "
                    f"{directory}, or pass --data-dir DIR (data_dir=DIR in Python) for a "
                    "folder that holds them")
