"""MNIST-format downloads against a local HTTP server on 127.0.0.1: checksums, the cache,
mirrors, progress and failures.

The server serves small IDX files generated here (tests/mnist_files.py); the tests pass
their SHA-256 table, so nothing reaches the network or the user's cache. Files already
in the data directory are in test_mnist.py.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
from mnist_files import check_dataset, isolate, mnist_files

from nnx.data import load, load_mnist
from nnx.data.download import cache_dir
from nnx.data.mnist import FILES
from nnx.errors import ChecksumError, ConfigError, DataError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test sees the user's cache or mirror settings."""
    isolate(tmp_path, monkeypatch)


class _Server:
    def __init__(self, files: dict):
        self.files = dict(files)  # path without leading slash -> bytes
        self.requests: list[str] = []
        self.short: set[str] = set()  # promise more bytes than sent, then hang up
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.lstrip("/")
                server.requests.append(path)
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                extra = 1000 if path.split("/")[-1] in server.short else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(mnist_blobs):
    s = _Server(mnist_blobs[0])
    yield s
    s.close()


@pytest.fixture
def served(tmp_path):
    files = mnist_files(tmp_path / "origin")
    server = _Server(files)
    checksums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    yield server, checksums
    server.close()


# --- a download is verified, then cached ------------------------------------------------------


def test_download_verifies_then_second_load_uses_the_cache(tmp_path, server, mnist_blobs,
                                                           mnist_arrays):
    cache = tmp_path / "cache"
    ds = load_mnist("mnist", cache, mirrors=[server.url], checksums=mnist_blobs[1], quiet=True)
    check_dataset(ds, mnist_arrays)
    assert sorted(server.requests) == sorted(FILES)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (cache / name).read_bytes() == mnist_blobs[0][name]
    server.requests.clear()
    again = load_mnist("mnist", cache, mirrors=[server.url], checksums=mnist_blobs[1], quiet=True)
    assert server.requests == []
    np.testing.assert_array_equal(again.x_train, ds.x_train)


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


def test_load_reads_the_mirror_from_the_environment(tmp_path, server, mnist_blobs, mnist_arrays,
                                                    monkeypatch):
    monkeypatch.setenv("NNX_MNIST_MIRROR", server.url)
    ds = load("mnist", data_dir=tmp_path / "c", checksums=mnist_blobs[1], quiet=True)
    check_dataset(ds, mnist_arrays)
    assert len(server.requests) == 4


def test_fashion_mnist_has_its_own_mirror_variable(tmp_path, server, mnist_blobs, mnist_arrays,
                                                   monkeypatch):
    monkeypatch.setenv("NNX_FASHION_MNIST_MIRROR", server.url)
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "env-cache"))
    ds = load("fashion-mnist", checksums=mnist_blobs[1], quiet=True)
    check_dataset(ds, mnist_arrays)
    assert ds.name == "fashion-mnist"
    assert sorted(p.name for p in (tmp_path / "env-cache").iterdir()) == sorted(FILES)


def test_progress_bar_on_stderr_unless_quiet(tmp_path, server, mnist_blobs, capsys):
    load_mnist("mnist", tmp_path / "c", mirrors=[server.url], checksums=mnist_blobs[1])
    err = capsys.readouterr().err
    assert "downloading train-images-idx3-ubyte.gz" in err and "100.0%" in err
    assert " B" in err or "KB" in err
    load_mnist("mnist", tmp_path / "d", mirrors=[server.url], checksums=mnist_blobs[1], quiet=True)
    assert capsys.readouterr().err == ""


def test_download_progress_goes_to_stderr(tmp_path, served, capsys):
    server, checksums = served
    load_mnist("mnist", data_dir=tmp_path / "c", mirrors=[server.url], checksums=checksums)
    assert "downloading train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_a_download_needs_a_checksum(tmp_path, server):
    with pytest.raises(ConfigError, match="SHA-256"):
        load_mnist("mnist", tmp_path, mirrors=[server.url], checksums={}, quiet=True)
    assert server.requests == []


def test_cache_dir_precedence(tmp_path, monkeypatch):
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir() == tmp_path / "default-cache"
    monkeypatch.delenv("NNX_DATA_DIR")
    assert cache_dir() == tmp_path / "home" / ".cache" / "nnx"


# --- bad files and failing servers ------------------------------------------------------------


def test_corrupt_file_on_the_server_is_rejected_and_not_cached(tmp_path, server, mnist_blobs):
    server.files[FILES[0]] = server.files[FILES[0]][:-5] + b"XXXXX"
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="SHA-256") as err:
        load_mnist("mnist", cache, mirrors=[server.url], checksums=mnist_blobs[1], quiet=True)
    assert FILES[0] in str(err.value) and server.url in str(err.value)
    assert mnist_blobs[1][FILES[0]] in str(err.value)
    assert list(cache.iterdir()) == []  # no temporary file, no final file


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


def test_corrupt_later_file_keeps_only_verified_files(tmp_path, server, mnist_blobs):
    server.files[FILES[2]] = b"not the file"
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError):
        load_mnist("mnist", cache, mirrors=[server.url], checksums=mnist_blobs[1], quiet=True)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES[:2])


def test_next_mirror_is_tried_after_a_bad_or_missing_file(tmp_path, server, mnist_blobs,
                                                          mnist_arrays):
    server.files.update({f"bad/{n}": b"garbage" for n in FILES})
    mirrors = [server.url + "missing/", server.url + "bad/", server.url]
    ds = load_mnist("mnist", tmp_path / "c", mirrors=mirrors, checksums=mnist_blobs[1], quiet=True)
    check_dataset(ds, mnist_arrays)
    assert f"missing/{FILES[0]}" in server.requests and f"bad/{FILES[0]}" in server.requests


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


def test_connection_closed_early_is_an_error_and_leaves_nothing(tmp_path, server, mnist_blobs):
    server.short.add(FILES[0])
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_mnist("mnist", cache, mirrors=[server.url], checksums=mnist_blobs[1], quiet=True,
                   timeout=5)
    assert not isinstance(err.value, ChecksumError)
    assert list(cache.iterdir()) == []


def test_server_down_says_what_was_tried_and_how_to_place_files(tmp_path, dead_url, mnist_blobs):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_mnist("mnist", cache, mirrors=[dead_url, dead_url + "other/"],
                   checksums=mnist_blobs[1], quiet=True, timeout=5)
    message = str(err.value)
    assert not isinstance(err.value, ChecksumError)
    assert f"{dead_url}{FILES[0]}" in message and f"{dead_url}other/{FILES[0]}" in message
    assert str(cache) in message and "--data-dir" in message
    assert all(name in message for name in FILES)
    assert [p for p in cache.iterdir()] == []


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
