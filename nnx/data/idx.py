"""IDX files (the MNIST format), plain or gzip-compressed.

Layout: a 4-byte magic number (two zero bytes, a dtype code, the number of
dimensions ``d``), then ``d`` big-endian uint32 sizes, then the data in C order.
MNIST images start ``00 00 08 03`` (uint8, 3 dimensions), labels ``00 00 08 01``.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import DataError

#: dtype code -> big-endian NumPy dtype
DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items()}


#: what a damaged file's message advises by default (a file nnx downloaded)
REDOWNLOAD = "delete it and download it again"


def read_idx(path, *, advice: str | None = REDOWNLOAD) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a native-endian array of its stored shape.

    Raises DataError when the file is missing, has a bad magic number or dtype
    code, or is shorter (truncated) or longer than its header says. A damaged
    file's message ends with ``advice`` (None: no advice; a user's own file is
    not to be deleted and downloaded).
    """
    path = os.fspath(path)
    todo = f"; {advice}" if advice else ""
    raw = _read_bytes(path, todo)
    dtype, shape, header = _header(raw, path, todo)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    held = len(raw) - header
    if held < expected:
        raise DataError(f"{path} is truncated: its header promises {expected} bytes of data "
                        f"for shape {shape} but it holds {held}{todo}")
    if held > expected:
        raise DataError(f"{path} has {held - expected} bytes after the {expected} its header "
                        f"promises for shape {shape}; it is corrupt or not an IDX file{todo}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _read_bytes(path: str, todo: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except (EOFError, zlib.error) as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc}){todo}") from None
    except OSError as exc:
        raise DataError(f"{path} is not a readable IDX file ({exc}){todo}") from None


def _header(raw: bytes, path: str, todo: str) -> tuple[np.dtype, tuple, int]:
    """``(dtype, shape, header length)`` from the magic number and the sizes."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} has a bad magic number 0x{raw[:4].hex() or '(empty)'}: an IDX "
                        "file starts with two zero bytes, a dtype code and the number of "
                        "dimensions (0x00000803 for MNIST images, 0x00000801 for labels). "
                        "Is it the right file, and not an HTML error page?")
    if raw[2] not in DTYPES:
        codes = ", ".join(f"0x{c:02x}" for c in DTYPES)
        raise DataError(f"{path} has an unknown IDX dtype code 0x{raw[2]:02x} (magic number "
                        f"0x{raw[:4].hex()}); valid codes are {codes}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0:
        raise DataError(f"{path} declares 0 dimensions (magic number 0x{raw[:4].hex()}); "
                        "an IDX file holds at least one")
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header{todo}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.dtype(DTYPES[raw[2]]), shape, header


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Its dtype must be one IDX can hold: uint8, int8, int16, int32, float32 or float64.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise DataError(f"IDX cannot hold a {array.ndim}-D {array.dtype} array; use uint8, "
                        "int8, int16, int32, float32 or float64 with at least one dimension")
    body = np.ascontiguousarray(array, dtype=np.dtype(DTYPES[code])).tobytes()
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + body)
