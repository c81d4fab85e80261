"""MNIST-format downloads against a local HTTP server on 127.0.0.1: checksums, cache, failures.

The server serves small IDX files generated here; the tests pass their
SHA-256 table, so nothing reaches the network or the user's cache.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from nnx.data import load, load_mnist, write_idx
from nnx.data.download import cache_dir
from nnx.data.mnist import FILES, SOURCES
from nnx.errors import ChecksumError, ConfigError, DataError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test sees the user's cache or mirror settings."""
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("NNX_MNIST_MIRROR", "NNX_FASHION_MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)


def _idx_gz(array) -> bytes:
    """A uint8 IDX file, gzip-compressed, as bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 12).astype(np.uint8),
            rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 6).astype(np.uint8))


@pytest.fixture(scope="module")
def blobs(arrays):
    """``{file name: gzip bytes}`` and their SHA-256 table."""
    files = {name: _idx_gz(a) for name, a in zip(FILES, arrays)}
    return files, {name: hashlib.sha256(b).hexdigest() for name, b in files.items()}


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
def server(blobs):
    s = _Server(blobs[0])
    yield s
    s.close()


@pytest.fixture
def dead_url():
    """A base URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _check_dataset(ds, arrays):
    xtr, ytr, xte, yte = arrays
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (6, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, xtr.reshape(12, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.x_test, xte.reshape(6, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.n_classes == 10 and ds.task == "classification"
    assert tuple(ds.meta["image_shape"]) == (28, 28)


def test_download_verifies_then_second_load_uses_the_cache(tmp_path, server, blobs, arrays):
    cache = tmp_path / "cache"
    ds = load_mnist("mnist", cache, mirrors=[server.url], checksums=blobs[1], quiet=True)
    _check_dataset(ds, arrays)
    assert sorted(server.requests) == sorted(FILES)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (cache / name).read_bytes() == blobs[0][name]
    server.requests.clear()
    again = load_mnist("mnist", cache, mirrors=[server.url], checksums=blobs[1], quiet=True)
    assert server.requests == []
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_load_reads_the_mirror_from_the_environment(tmp_path, server, blobs, arrays,
                                                    monkeypatch):
    monkeypatch.setenv("NNX_MNIST_MIRROR", server.url)
    ds = load("mnist", data_dir=tmp_path / "c", checksums=blobs[1], quiet=True)
    _check_dataset(ds, arrays)
    assert len(server.requests) == 4


def test_fashion_mnist_has_its_own_mirror_variable(tmp_path, server, blobs, arrays,
                                                   monkeypatch):
    monkeypatch.setenv("NNX_FASHION_MNIST_MIRROR", server.url)
    monkeypatch.setenv("NNX_DATA_DIR", str(tmp_path / "env-cache"))
    ds = load("fashion-mnist", checksums=blobs[1], quiet=True)
    _check_dataset(ds, arrays)
    assert ds.name == "fashion-mnist"
    assert sorted(p.name for p in (tmp_path / "env-cache").iterdir()) == sorted(FILES)


def test_progress_bar_on_stderr_unless_quiet(tmp_path, server, blobs, capsys):
    load_mnist("mnist", tmp_path / "c", mirrors=[server.url], checksums=blobs[1])
    err = capsys.readouterr().err
    assert "downloading train-images-idx3-ubyte.gz" in err and "100.0%" in err
    assert " B" in err or "KB" in err
    load_mnist("mnist", tmp_path / "d", mirrors=[server.url], checksums=blobs[1], quiet=True)
    assert capsys.readouterr().err == ""


def test_corrupt_file_on_the_server_is_rejected_and_not_cached(tmp_path, server, blobs):
    server.files[FILES[0]] = server.files[FILES[0]][:-5] + b"XXXXX"
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="SHA-256") as err:
        load_mnist("mnist", cache, mirrors=[server.url], checksums=blobs[1], quiet=True)
    assert FILES[0] in str(err.value) and server.url in str(err.value)
    assert blobs[1][FILES[0]] in str(err.value)
    assert list(cache.iterdir()) == []  # no temporary file, no final file


def test_corrupt_later_file_keeps_only_verified_files(tmp_path, server, blobs):
    server.files[FILES[2]] = b"not the file"
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError):
        load_mnist("mnist", cache, mirrors=[server.url], checksums=blobs[1], quiet=True)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES[:2])


def test_next_mirror_is_tried_after_a_bad_or_missing_file(tmp_path, server, blobs, arrays):
    server.files.update({f"bad/{n}": b"garbage" for n in FILES})
    mirrors = [server.url + "missing/", server.url + "bad/", server.url]
    ds = load_mnist("mnist", tmp_path / "c", mirrors=mirrors, checksums=blobs[1], quiet=True)
    _check_dataset(ds, arrays)
    assert f"missing/{FILES[0]}" in server.requests and f"bad/{FILES[0]}" in server.requests


def test_connection_closed_early_is_an_error_and_leaves_nothing(tmp_path, server, blobs):
    server.short.add(FILES[0])
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_mnist("mnist", cache, mirrors=[server.url], checksums=blobs[1], quiet=True,
                   timeout=5)
    assert not isinstance(err.value, ChecksumError)
    assert list(cache.iterdir()) == []


def test_server_down_says_what_was_tried_and_how_to_place_files(tmp_path, dead_url, blobs):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_mnist("mnist", cache, mirrors=[dead_url, dead_url + "other/"],
                   checksums=blobs[1], quiet=True, timeout=5)
    message = str(err.value)
    assert not isinstance(err.value, ChecksumError)
    assert f"{dead_url}{FILES[0]}" in message and f"{dead_url}other/{FILES[0]}" in message
    assert str(cache) in message and "--data-dir" in message
    assert all(name in message for name in FILES)
    assert [p for p in cache.iterdir()] == []


def test_files_already_in_the_data_dir_need_no_network(tmp_path, dead_url, blobs, arrays):
    for name, body in blobs[0].items():
        (tmp_path / name).write_bytes(body)
    ds = load_mnist("mnist", tmp_path, mirrors=[dead_url], checksums=blobs[1], quiet=True)
    _check_dataset(ds, arrays)


@pytest.mark.parametrize("style", ["dash", "dot"])
def test_uncompressed_copies_are_used(tmp_path, dead_url, arrays, style):
    for name, array in zip(FILES, arrays):
        plain = name[:-3] if style == "dash" else name[:-3].replace("-idx", ".idx")
        write_idx(tmp_path / plain, array)
    ds = load_mnist("mnist", tmp_path, mirrors=[dead_url], checksums={}, download=False)
    _check_dataset(ds, arrays)


def test_uncompressed_copy_with_a_known_wrong_checksum_is_refused(tmp_path, arrays, blobs):
    for name, array in zip(FILES, arrays):
        write_idx(tmp_path / name[:-3], array)
    # the published table knows the SHA-256 of the real uncompressed MNIST files
    with pytest.raises(ChecksumError, match="delete it"):
        load_mnist("mnist", tmp_path, download=False)


def test_existing_file_with_a_wrong_checksum_says_to_delete_it(tmp_path, blobs):
    for name, body in blobs[0].items():
        (tmp_path / name).write_bytes(body)
    (tmp_path / FILES[1]).write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(ChecksumError, match="delete it") as err:
        load_mnist("mnist", tmp_path, checksums=blobs[1], download=False)
    assert FILES[1] in str(err.value)


def test_missing_files_without_download(tmp_path, blobs):
    (tmp_path / FILES[0]).write_bytes(blobs[0][FILES[0]])
    with pytest.raises(DataError, match="not found") as err:
        load_mnist("mnist", tmp_path, checksums=blobs[1], download=False)
    assert FILES[1] in str(err.value) and FILES[0] not in str(err.value)


def test_a_download_needs_a_checksum(tmp_path, server):
    with pytest.raises(ConfigError, match="SHA-256"):
        load_mnist("mnist", tmp_path, mirrors=[server.url], checksums={}, quiet=True)
    assert server.requests == []


def test_files_that_do_not_fit_together(tmp_path, arrays):
    xtr, ytr, xte, yte = arrays
    for name, a in zip(FILES, (xtr, ytr[:5], xte, yte)):
        write_idx(tmp_path / name[:-3], a)
    with pytest.raises(DataError, match="do not fit together"):
        load_mnist("mnist", tmp_path, checksums={}, download=False)
    write_idx(tmp_path / FILES[1][:-3], np.full(12, 11, np.uint8))
    with pytest.raises(DataError, match="labels go up to 11"):
        load_mnist("mnist", tmp_path, checksums={}, download=False)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir() == tmp_path / "default-cache"
    monkeypatch.delenv("NNX_DATA_DIR")
    assert cache_dir() == tmp_path / "home" / ".cache" / "nnx"


def test_published_table():
    for which, source in SOURCES.items():
        for name in FILES:
            digest = source["sha256"][name]
            assert len(digest) == 64 and int(digest, 16) >= 0, (which, name)
        assert all(u.startswith("http") and u.endswith("/") for u in source["mirrors"])
    assert SOURCES["mnist"]["mirrors"][0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert SOURCES["mnist"]["sha256"]["train-images-idx3-ubyte.gz"].startswith("440fcabf")


def test_mirror_precedence(monkeypatch):
    from nnx.data.mnist import mirrors_for

    assert mirrors_for("mnist") == list(SOURCES["mnist"]["mirrors"])
    monkeypatch.setenv("NNX_MNIST_MIRROR", "http://a/, http://b/")
    assert mirrors_for("mnist") == ["http://a/", "http://b/"]
    assert mirrors_for("fashion-mnist") == list(SOURCES["fashion-mnist"]["mirrors"])
    assert mirrors_for("mnist", ["http://c/"]) == ["http://c/"]
    assert mirrors_for("mnist", "http://d/") == ["http://d/"]
    monkeypatch.setenv("NNX_MNIST_MIRROR", " , ")
    assert mirrors_for("mnist") == list(SOURCES["mnist"]["mirrors"])
