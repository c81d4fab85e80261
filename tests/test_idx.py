"""IDX files (the MNIST format): round trips of every dtype, plain and gzip, the header
bytes, and a bad magic number, a truncated file or extra bytes named as data errors.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from nnx.data import read_idx, write_idx
from nnx.errors import DataError


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,shape", [("uint8", (5, 28, 28)), ("uint8", (7,)),
                                         ("int16", (3, 4)), ("float32", (2, 3, 2)),
                                         ("float64", (4,)), ("int32", (2, 2))])
def test_idx_round_trip(tmp_path, suffix, dtype, shape):
    a = (np.arange(np.prod(shape)) * 3 - 5).reshape(shape).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == shape and np.array_equal(a, b)
    assert b.dtype.isnative
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_idx_round_trip_of_a_3d_array(tmp_path, suffix, dtype):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5)
    if dtype == "uint8":
        a = np.abs(a)
    a = a.astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_mnist_header_bytes(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    raw = (tmp_path / "i").read_bytes()
    assert raw[:4] == bytes.fromhex("00000803") and int.from_bytes(raw[4:8], "big") == 2
    assert len(raw) == 16 + 2 * 784


def test_idx_bad_magic_names_the_file_and_the_expected_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="bad magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "0x00000803" in str(err.value)
    path.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataError, match="unknown IDX dtype code 0x42"):
        read_idx(path)


def test_idx_bad_magic_and_truncated(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((4, 3, 3), np.uint8))
    raw = path.read_bytes()
    (tmp_path / "magic").write_bytes(b"<htm" + raw[4:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(raw[:6])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "header")
    with gzip.open(tmp_path / "cut.gz", "wb") as f:
        f.write(raw)
    (tmp_path / "cut.gz").write_bytes((tmp_path / "cut.gz").read_bytes()[:-12])
    with pytest.raises(DataError, match="truncated|corrupt"):
        read_idx(tmp_path / "cut.gz")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    write_idx(good, np.ones((10, 28, 28), np.uint8))
    raw = good.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    if suffix:  # a complete gzip stream of a truncated file, and a cut gzip stream
        cut.write_bytes(gzip.compress(gzip.decompress(raw)[:-100]))
    else:
        cut.write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated.*delete it") as err:
        read_idx(cut)
    assert str(cut) in str(err.value)
    if suffix:
        cut.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(DataError, match="truncated or corrupt.*delete it"):
            read_idx(cut)
    (tmp_path / "h").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(tmp_path / "h")


def test_idx_extra_bytes_and_missing_file(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.ones(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="2 bytes after"):
        read_idx(path)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match="IDX cannot hold"):
        write_idx(tmp_path / "y", np.ones(3, np.int64))
