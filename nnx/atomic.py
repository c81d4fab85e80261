"""Writing files safely: whole or not at all, and never through a link.

Every file nnx writes goes through here: models and checkpoints, the run
directory's files, figures, exports and reports.

- :func:`write_bytes` and :func:`replacing` (a binary file to write into, for
  writers such as ``savefig``): a temporary file is created exclusively in the
  target's directory (``O_CREAT | O_EXCL | O_NOFOLLOW``, so it never opens an
  existing file or a link, under a name nobody can predict:
  ``.NAME.tmp-PID.XXXXXXXX``), written, flushed, fsync-ed and renamed over the
  target; then the directory is fsync-ed. A crash at any moment leaves the
  previous file whole, and an interrupt leaves no temporary file. A link
  planted at the target is replaced, never followed.
- :func:`append_text`: appends only to a regular file with one name (not a
  symbolic link, not a hard link to a file elsewhere), created if missing.
- Every ``OSError`` of a write becomes a :class:`~nnx.errors.WriteError` that
  names the file and the reason (a full disk, no permission, a link).

``NNX_TEST_SLOW_WRITE=<seconds>`` pauses every atomic write between writing
its temporary file and renaming it, so that tests can interrupt it there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time

from .errors import WriteError

__all__ = ["write_bytes", "replacing", "append_text", "check_own_file", "write_error",
           "temporary_owner"]

_TMP = ".tmp-"  # .NAME.tmp-PID.XXXXXXXX: the writer's pid says whether it is still alive
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_HINTS = {errno.ENOSPC: "free some disk space or write elsewhere",
          errno.EDQUOT: "free some space in your quota or write elsewhere",
          errno.EROFS: "the file system is read-only; write elsewhere",
          errno.EACCES: "check the permissions, or write elsewhere",
          errno.EPERM: "check the permissions, or write elsewhere",
          errno.ENOENT: "check that the directory exists",
          errno.ENAMETOOLONG: "use a shorter name",
          errno.ELOOP: "it is a symbolic link, and nnx never writes through one: remove it"}


def write_error(path, exc: OSError, what: str = "write") -> WriteError:
    """The WriteError for ``exc`` raised while writing ``path``: the file, the reason, a hint."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno, "check that the directory exists and is writable")
    return WriteError(f"cannot {what} {os.fspath(path)}: {reason}; {hint}")


@contextlib.contextmanager
def replacing(path):
    """``with replacing(path) as f: f.write(...)``: ``f`` is a new temporary file in
    ``path``'s directory, renamed over ``path`` when the block ends without an error
    and removed when it raises. An OSError (in the block too) is a WriteError naming
    ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        for _ in range(100):
            tmp = _temporary_name(path, directory)  # known before the file exists, so an
            fd = _create(tmp, path)  # interrupt at any moment leaves nothing behind
            if fd is not None:
                break
            tmp = None
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name")
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        delay = os.environ.get("NNX_TEST_SLOW_WRITE")  # lets tests kill us mid-write
        if delay:
            time.sleep(float(delay))
        os.replace(tmp, path)
        tmp = None
    except WriteError:
        raise
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    _sync_directory(directory)


def _temporary_name(path: str, directory: str) -> str:
    """``directory/.NAME.tmp-PID.XXXXXXXX``: nobody can guess it (8 random hex digits), and
    the writer's pid says whether it is still alive (the name part is cut to stay within
    the file system's name limit)."""
    return os.path.join(directory, f".{os.path.basename(path)[:100]}{_TMP}{os.getpid()}."
                                   f"{secrets.token_hex(4)}")


def _create(tmp: str, path: str) -> int | None:
    """Create ``tmp`` exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``: never an existing file,
    never through a link) with the mode ``path`` has or would get; None if the name is
    taken (that entry is never touched)."""
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
                     | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        return None
    if hasattr(os, "fchmod"):  # what open() would have given, not 0600
        os.fchmod(fd, _mode_for(path))
    return fd


def _mode_for(path) -> int:
    """The permissions of the file being replaced, else those the umask gives a new file."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path) as f:
        f.write(data)


def _sync_directory(directory: str) -> None:
    """Make a rename durable (where the system allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_unless_own(path, st) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise WriteError(f"cannot write {os.fspath(path)}: it is not a regular file; remove "
                         "it or write elsewhere")
    if st.st_nlink > 1:
        raise WriteError(f"cannot write {os.fspath(path)}: it is a hard link shared with "
                         f"{st.st_nlink - 1} other name(s), and nnx only appends to files of "
                         "its own; remove it or write elsewhere")


def check_own_file(path) -> bool:
    """Whether ``path`` exists; raise WriteError when it exists but is a symbolic link, a
    hard link or not a regular file (something nnx must not append to)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise write_error(path, exc) from None
    if stat.S_ISLNK(st.st_mode):
        raise write_error(path, OSError(errno.ELOOP, "it is a symbolic link"))
    _refuse_unless_own(path, st)
    return True


def append_text(path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path``, flushed and fsync-ed; created when missing.

    Refuses (WriteError) a symbolic link (``O_NOFOLLOW``), a hard link and anything
    that is not a regular file, before writing a byte.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC,
                     0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        st = os.fstat(fd)
        _refuse_unless_own(path, st)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except WriteError:
        raise
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        os.close(fd)


def temporary_owner(name: str) -> int | None:
    """The pid that wrote the temporary file ``name`` (``.NAME.tmp-PID.XXXX``), else None."""
    if not name.startswith(".") or _TMP not in name:
        return None
    pid = name.rsplit(_TMP, 1)[1].split(".", 1)[0]
    return int(pid) if pid.isdigit() else None
