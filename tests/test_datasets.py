"""Datasets: synthetic generators, bundled digits, IDX files, verified downloads, user files."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx.data import load, load_file, load_mnist, read_idx, write_idx
from nnx.errors import ChecksumError, ConfigError, DataError

SYNTHETIC = {
    # name: (kwargs, features, classes or None for regression)
    "spirals": ({"n": 300, "classes": 3}, 2, 3),
    "moons": ({"n": 200}, 2, 2),
    "circles": ({"n": 200}, 2, 2),
    "xor": ({"n": 200}, 2, 2),
    "blobs": ({"n": 200, "classes": 4, "features": 3}, 3, 4),
    "regression": ({"n": 200, "features": 4, "outputs": 2}, 4, None),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_loaders_shapes_dtypes_and_determinism(name):
    kwargs, features, classes = SYNTHETIC[name]
    ds = load(name, seed=3, **kwargs)
    n = kwargs["n"]
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == n
    assert ds.x_test.shape[0] == round(0.2 * n)
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == features == ds.n_features
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert np.isfinite(ds.x_train).all()
    if classes is None:
        assert ds.task == "regression" and ds.n_classes is None
        assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (len(ds.x_train), 2)
    else:
        assert ds.task == "classification" and ds.n_classes == classes
        assert ds.y_train.dtype == np.int64 and ds.y_train.shape == (len(ds.x_train),)
        assert set(np.unique(ds.y_train)) == set(range(classes))
    again = load(name, seed=3, **kwargs)
    other = load(name, seed=4, **kwargs)
    for a, b in ((ds.x_train, again.x_train), (ds.y_train, again.y_train),
                 (ds.x_test, again.x_test)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ds.x_train, other.x_train)


def test_synthetic_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="classes"):
        nnx.data.spirals(classes=1)
    with pytest.raises(ConfigError, match="n must be"):
        nnx.data.moons(n=1)
    with pytest.raises(ConfigError, match="options are"):
        load("spirals", wiggle=3)
    with pytest.raises(ConfigError, match="unknown dataset.*digits"):
        load("cifar")


def test_digits_has_1797_rows_and_a_stratified_split():
    ds = load("digits")
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.shape[1] == 64 and ds.n_classes == 10
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    whole = np.bincount(np.r_[ds.y_train, ds.y_test], minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    # every class loses the same share (within one example) to the test split
    np.testing.assert_allclose(test, whole * len(ds.y_test) / 1797, atol=1.0)
    assert ds.meta["image_shape"] == (8, 8)


# --- IDX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_idx_round_trip(tmp_path, suffix, dtype):
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


# --- downloads from a local server ------------------------------------------------------------


def _mnist_files(directory: Path, label_max: int = 9) -> dict[str, bytes]:
    """Small MNIST-format .gz files: {name: bytes}."""
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


class _Server:
    """A local HTTP server on 127.0.0.1 serving ``files``; counts requests per path."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = dict(files), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                body = server.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    files = _mnist_files(tmp_path / "origin")
    server = _Server(files)
    checksums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    yield server, checksums
    server.close()


def test_download_verifies_and_caches(tmp_path, served):
    server, checksums = served
    cache = tmp_path / "cache"
    ds = load_mnist("mnist", data_dir=cache, mirrors=[server.url], checksums=checksums,
                    quiet=True)
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() <= ds.x_train.max() <= 1
    assert ds.y_train.dtype == np.int64 and ds.n_classes == 10
    assert len(server.requests) == 4
    assert sorted(p.name for p in cache.iterdir()) == sorted(checksums)
    # second load: everything is in the cache, no request at all
    again = load("mnist", data_dir=cache, mirrors=[server.url], checksums=checksums, quiet=True)
    assert len(server.requests) == 4
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_download_progress_goes_to_stderr(tmp_path, served, capsys):
    server, checksums = served
    load_mnist("mnist", data_dir=tmp_path / "c", mirrors=[server.url], checksums=checksums)
    assert "downloading train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_corrupted_download_is_rejected_and_not_cached(tmp_path, served):
    server, checksums = served
    name = "train-labels-idx1-ubyte.gz"
    body = bytearray(server.files[name])
    body[-3] ^= 0xFF
    server.files[name] = bytes(body)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="SHA-256") as err:
        load_mnist("mnist", data_dir=cache, mirrors=[server.url], checksums=checksums,
                   quiet=True)
    assert server.url + name in str(err.value)
    leftover = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert name not in leftover
    assert not [n for n in leftover if n.startswith(".") or n.endswith((".part", ".tmp"))]


def test_a_second_mirror_is_tried_after_a_bad_one(tmp_path, served):
    server, checksums = served
    bad = _Server({k: b"junk" for k in server.files})
    try:
        ds = load_mnist("mnist", data_dir=tmp_path / "c", mirrors=[bad.url, server.url],
                        checksums=checksums, quiet=True)
    finally:
        bad.close()
    assert len(bad.requests) == 4 and len(server.requests) == 4
    assert ds.x_train.shape == (20, 784)


def test_server_down_is_a_data_error_naming_the_url(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mnist/"
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_mnist("mnist", data_dir=cache, mirrors=[url], quiet=True, timeout=5)
    assert not isinstance(err.value, ChecksumError)
    assert url + "train-images-idx3-ubyte.gz" in str(err.value)
    assert not cache.exists() or not list(cache.iterdir())


def test_files_already_present_are_used_without_a_network(tmp_path):
    files = _mnist_files(tmp_path / "data")
    checksums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    ds = load_mnist("mnist", data_dir=tmp_path / "data", mirrors=["http://127.0.0.1:9/"],
                    checksums=checksums, download=False)
    assert ds.x_train.shape == (20, 784)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_mnist("mnist", data_dir=tmp_path / "data", checksums=checksums, download=False)


# --- the user's files --------------------------------------------------------------------------


def test_npz_loading(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load(str(tmp_path / "d.npz"), seed=1)
    assert ds.task == "classification" and ds.n_classes == 5
    assert len(ds.x_train) + len(ds.x_test) == 50 and ds.x_train.dtype == np.float32
    images = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=images, y=np.arange(30) % 2, x_test=images[:5],
             y_test=np.arange(5) % 2)
    ds = load_file(tmp_path / "img.npz")
    assert ds.x_train.shape == (30, 16) and ds.x_test.shape == (5, 16)
    assert ds.x_train.max() <= 1.0 and ds.meta["image_shape"] == (4, 4)
    np.savez(tmp_path / "reg.npz", x=x, y=x @ [1.0, 2.0, 3.0] + 0.5)
    assert load_file(tmp_path / "reg.npz").task == "regression"


def test_csv_loading_with_and_without_a_header(tmp_path):
    rows = [(i, 2 * i, i % 3) for i in range(30)]
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"{a},{b},{c}\n" for a, b, c in rows))
    ds = load(str(plain))
    assert ds.n_features == 2 and ds.n_classes == 3
    headed = tmp_path / "headed.csv"
    headed.write_text("label,a,b\n" + "".join(f"{c},{a},{b}\n" for a, b, c in rows))
    dh = load(str(headed))
    assert dh.n_features == 2 and dh.n_classes == 3
    np.testing.assert_array_equal(np.sort(dh.x_train[:, 0]), np.sort(ds.x_train[:, 0]))
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,0\n1,x,1\n")
    with pytest.raises(DataError, match="numeric CSV"):
        load(str(bad))


def test_uncompressed_copies_under_either_name_are_verified(tmp_path):
    files = _mnist_files(tmp_path / "gz")
    plain = {name[:-3]: gzip.decompress(body) for name, body in files.items()}
    checksums = {name: hashlib.sha256(body).hexdigest() for name, body in plain.items()}
    data = tmp_path / "data"
    data.mkdir()
    for name, body in plain.items():  # the dotted spelling some mirrors use
        (data / name.replace("-idx", ".idx", 1)).write_bytes(body)
    ds = load_mnist("mnist", data_dir=data, checksums=checksums, download=False)
    assert ds.x_train.shape == (20, 784)
    first = data / "train-images.idx3-ubyte"
    first.write_bytes(first.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ChecksumError, match="train-images.idx3-ubyte"):
        load_mnist("mnist", data_dir=data, checksums=checksums, download=False)


def test_labels_that_cannot_be_class_indices(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2))
    y = np.zeros(40)
    y[-1] = 2.0 ** 40  # would ask for an output layer of 2**40 units
    np.savez(tmp_path / "huge.npz", x=x, y=y)
    with pytest.raises(DataError, match="out of range"):
        load_file(tmp_path / "huge.npz")
    np.savez(tmp_path / "gap.npz", x=x, y=np.r_[np.zeros(20), np.full(20, 4)])
    with pytest.warns(UserWarning, match="classes 1, 2, 3 have no examples"):
        ds = load_file(tmp_path / "gap.npz")
    assert ds.n_classes == 5
