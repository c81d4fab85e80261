"""Downloading dataset files safely: temporary file, SHA-256 check, then rename.

Nothing half-downloaded or unverified is ever used: a file reaches its final
name only after its checksum matched.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ChecksumError, DataError


def cache_dir(data_dir=None) -> Path:
    """``data_dir``, else ``$NNX_DATA_DIR``, else ``~/.cache/nnx``."""
    return Path(data_dir or os.environ.get("NNX_DATA_DIR") or Path.home() / ".cache" / "nnx")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path, expected: str | None) -> None:
    """Raise ChecksumError when ``path``'s SHA-256 is not ``expected`` (None skips)."""
    if expected is None:
        return
    got = sha256(path)
    if got != expected:
        raise ChecksumError(f"{path} has SHA-256 {got[:16]}..., expected {expected[:16]}...; "
                            "the file is corrupt or not the expected one: delete it and "
                            "download again")


def _progress(name, done, total, quiet):
    if quiet:
        return
    if total:
        pct = 100.0 * done / total
        sys.stderr.write(f"\rdownloading {name}: {done / 1e6:6.1f}/{total / 1e6:.1f} MB "
                         f"({pct:5.1f}%)")
    else:
        sys.stderr.write(f"\rdownloading {name}: {done / 1e6:6.1f} MB")
    sys.stderr.flush()


def fetch(name: str, urls: list[str], directory: Path, checksum: str | None, *,
          quiet: bool = False, timeout: float = 30.0) -> Path:
    """Download ``name`` from the first working base URL into ``directory``.

    The body goes to ``.name.part-PID``, is verified, then renamed to ``name``.
    A checksum mismatch deletes the partial file and raises ChecksumError.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / f".{name}.part-{os.getpid()}"
    errors, bad_checksum = [], []
    for base in urls:
        url = base.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0)
                done = 0
                for chunk in iter(lambda: r.read(1 << 16), b""):
                    f.write(chunk)
                    done += len(chunk)
                    _progress(name, done, total, quiet)
                f.flush()
                os.fsync(f.fileno())
            if not quiet:
                sys.stderr.write("\n")
            verify(tmp, checksum)
            os.replace(tmp, final)
            return final
        except ChecksumError:
            bad_checksum.append(url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url} ({getattr(exc, 'reason', exc)})")
        finally:
            if tmp.exists():
                tmp.unlink()
    if bad_checksum:
        raise ChecksumError(f"the download of {name} from {', '.join(bad_checksum)} failed its "
                            "SHA-256 check and was discarded; try again later or place a good "
                            f"copy in {directory}")
    raise DataError(f"could not download {name}: tried {'; '.join(errors)}. Without a network, "
                    f"put the file in {directory} (or pass --data-dir DIR holding it)")
