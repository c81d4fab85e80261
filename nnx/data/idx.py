"""IDX files (the MNIST format), plain or gzip-compressed.

Header: two zero bytes, a dtype code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import DataError

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array of its stored shape."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable IDX file ({exc}); delete it and download "
                        "it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} has a bad magic number {raw[:4].hex() or '(empty)'}; an IDX "
                        "file starts with 0x0000 then a dtype code (0x08 for uint8 images "
                        "and labels: 00000801 or 00000803). Is it the right file?")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; delete it and download again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header < expected:
        raise DataError(f"{path} is truncated: its header promises {expected} bytes of data "
                        f"for shape {shape} but it holds {len(raw) - header}; delete it and "
                        "download it again")
    return np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize,
                         offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzip-compressed when ``path`` ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
