"""The run directory: every file a training run writes, written atomically, by one process.

:meth:`RunDir.create` takes the directory's lock (:class:`RunLock`, the operating
system's ``flock`` on ``.nnx-lock``): a second run into the same ``--out``, or a
``--resume`` while the run is still training, fails at once naming the process
that holds it. A lock left by a killed process is no lock (the system releases
it with the process) and is taken over. The directory must hold its own files:
a symbolic link (or a hard link) among them is refused, since writing it would
change a file elsewhere. Writes go through :mod:`nnx.atomic`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import tempfile
import warnings
from pathlib import Path

from . import atomic
from .errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer is then the user's to ensure
    fcntl = None

LOCK_NAME = ".nnx-lock"
#: every file a run writes into its directory: none of them may be a link
RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "curves.png", "model.npz",
             "checkpoint.npz", "summary.json", "lr_find.png", "doctor.json", "doctor.md",
             "doctor.png", LOCK_NAME)
_NO_LOCKS = {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP") if hasattr(errno, n)}


class RunLock:
    """An exclusive ``flock`` on ``directory/.nnx-lock``, holding ``pid host`` of its owner.

    :meth:`release` removes the file while still holding the lock; a process that
    opened the old file meanwhile sees that its file is no longer the one at the path
    and tries again, so two processes never both believe they hold it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self.fd: int | None = None
        if fcntl is None:
            return
        for _ in range(10):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(_busy(directory, holder)) from None
                if exc.errno in _NO_LOCKS:  # a file system without flock: go on unlocked
                    warnings.warn(f"cannot lock {directory} ({exc.strerror}); make sure no "
                                  "other nnx run writes into it", stacklevel=4)
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                    return
                raise
            if _same_file(self.path, fd):
                self.fd = fd
                break
            os.close(fd)  # the file was removed by its previous owner: take the new one
        if self.fd is None:
            raise ConfigError(_busy(directory, ""))
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode())

    def _open(self) -> int:
        """The lock file, opened without following a link; only a regular file of its own."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symbolic link; a run directory holds "
                                  "its own files: remove the link, or choose another "
                                  "--out") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            raise ConfigError(f"{self.path} is not a plain file of its own (a hard link or "
                              "a special file); remove it, or choose another --out")
        return fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _same_file(path: Path, fd: int) -> bool:
    try:
        here = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)


def _busy(directory: Path, holder: str) -> str:
    pid, _, host = holder.partition(" ")
    who = "another process"
    if pid.isdigit():
        who = f"another nnx process (pid {pid}" + (
            f" on {host})" if host and host != socket.gethostname() else ")")
    stop = f" (Ctrl-C in its terminal, or kill {pid})" if pid.isdigit() else ""
    return (f"{directory} is in use: {who} is training into it. One run directory has one "
            f"writer: wait for that run to end or stop it{stop} before resuming, or choose "
            "another --out")


class RunDir:
    """``runs/<name>/`` with ``config.json``, ``metrics.csv``, ``metrics.jsonl``,
    ``curves.png``, ``model.npz``, ``checkpoint.npz`` and ``summary.json``."""

    def __init__(self, path: Path, created: tuple[Path, ...] = (), lock: RunLock | None = None
                 ) -> None:
        self.path = path
        self.created = created  # directories this run made, deepest first
        self.lock = lock
        self.config = path / "config.json"
        self.metrics_csv = path / "metrics.csv"
        self.metrics_jsonl = path / "metrics.jsonl"
        self.curves = path / "curves.png"
        self.model = path / "model.npz"
        self.checkpoint = path / "checkpoint.npz"
        self.summary = path / "summary.json"

    @classmethod
    def create(cls, path, resume: bool = False) -> RunDir:
        """Create (or reuse, when resuming) the directory, lock it and prove it is writable.

        A path the system refuses (a name too long, a file where a directory should
        be) is a ConfigError naming the path and the reason; so is a directory
        another process is training into, or one holding links.
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
        created = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, tuple(created))
        try:
            run.lock = RunLock(path)
            if not resume and (path / "checkpoint.npz").exists():
                raise ConfigError(f"{path} already holds a run; use --resume {path} to "
                                  "continue it, or choose another --out")
            _refuse_links(path)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)  # O_EXCL
            os.close(fd)
            os.unlink(probe)
            if resume:
                cls._remove_stale_temporaries(path)
        except BaseException:
            run.discard_if_unused()
            raise
        return run

    def close(self) -> None:
        """Release the directory's lock (at the end of the run; idempotent)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard_if_unused(self) -> None:
        """Release the lock and remove the directories :meth:`create` made, if the run failed
        before writing to them (a mistyped flag leaves no empty ``runs/...`` behind). Never
        removes a file."""
        self.close()
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
            pid = atomic.temporary_owner(tmp.name)
            if pid is not None and not _alive(pid) and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)

    def write_config(self, resolved: dict, extra: dict | None = None) -> None:
        doc = {"settings": resolved, **(extra or {})}
        atomic.write_bytes(self.config, json.dumps(doc, indent=2, default=str).encode("utf-8"))

    def write_summary(self, summary: dict) -> None:
        atomic.write_bytes(self.summary, json.dumps(summary, indent=2).encode("utf-8"))


def _refuse_links(path: Path) -> None:
    """ConfigError when a file the run writes (:data:`RUN_FILES`) is a symbolic link or has
    another name elsewhere (a hard link): nnx writes only files of its own. Other entries
    are never written (temporary files get names nobody can predict), so they may stay."""
    for name in RUN_FILES:
        entry = path / name
        try:
            st = os.lstat(entry)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(f"{entry} is a symbolic link (to {os.readlink(entry)}); a run "
                              "directory holds its own files, so nnx will not write through "
                              "it: remove the link, or choose another --out")
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise ConfigError(f"{entry} is a hard link: the same file has {st.st_nlink - 1} "
                              "other name(s), so writing it would change a file elsewhere: "
                              "replace it with a copy, or choose another --out")


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
