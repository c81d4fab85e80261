"""Small MNIST-format files made here, shared by test_download.py and test_mnist.py.

Nothing reaches the network or the user's cache: the tests pass their own SHA-256
tables and point the data directory and ``HOME`` at temporary folders.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
from pathlib import Path

import numpy as np

from nnx.data import write_idx
from nnx.data.mnist import FILES


def isolate(tmp_path, monkeypatch) -> None:
    """No test sees the user's cache or mirror settings."""
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("NNX_MNIST_MIRROR", "NNX_FASHION_MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)


def idx_gz(array) -> bytes:
    """A uint8 IDX file, gzip-compressed, as bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def sample_arrays():
    """Train images (12, 28, 28), train labels, test images (6, 28, 28), test labels."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 12).astype(np.uint8),
            rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 6).astype(np.uint8))


def gzip_files(arrays):
    """``{file name: gzip bytes}`` of ``arrays`` under the MNIST names, and their SHA-256."""
    files = {name: idx_gz(a) for name, a in zip(FILES, arrays)}
    return files, {name: hashlib.sha256(b).hexdigest() for name, b in files.items()}


def unused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def check_dataset(ds, arrays):
    """``ds`` is ``arrays`` (:func:`sample_arrays`) loaded as MNIST."""
    xtr, ytr, xte, yte = arrays
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (6, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, xtr.reshape(12, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.x_test, xte.reshape(6, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.n_classes == 10 and ds.task == "classification"
    assert tuple(ds.meta["image_shape"]) == (28, 28)


def mnist_files(directory: Path, label_max: int = 9) -> dict[str, bytes]:
    """Small MNIST-format .gz files (20 train, 10 test images) in ``directory``:
    {name: bytes}."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(20) % (label_max + 1)).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(10) % (label_max + 1)).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, a in arrays.items():
        write_idx(directory / name, a)
        out[name] = (directory / name).read_bytes()
    return out
