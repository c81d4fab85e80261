"""Device strings, error messages, host/device copies and device generators."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
from conftest import get_backend_or_skip

import backends
import nnx
from backends import cupy_backend, strict_backend


@pytest.fixture
def no_cache(monkeypatch):
    """Backends built by the test are not kept in (or taken from) the shared cache."""
    monkeypatch.setattr(backends, "_cache", {})


# --- device strings -------------------------------------------------------------------

@pytest.mark.parametrize("spec,name,label", [
    ("cpu", "numpy", "numpy"), ("numpy", "numpy", "numpy"), (" CPU ", "numpy", "numpy"),
    ("strict", "strict", "strict"), ("strict:device1", "strict", "strict:device1"),
    ("strict:no_float64", "strict", "strict:no_float64"), ("torch", "torch", "torch")])
def test_device_strings(spec, name, label):
    backend = get_backend_or_skip(spec)
    assert backend.name == name and backend.label == label
    assert backends.get(backend) is backend
    assert backends.get(spec) is backend  # cached
    assert isinstance(backend.describe(), str) and label in backend.describe()


def test_cpu_and_numpy_are_one_backend():
    assert backends.get("cpu") is backends.get("numpy")


def test_strict_devices_differ():
    devices = {str(backends.get(s).device) for s in ("strict", "strict:device1",
                                                      "strict:no_float64")}
    assert len(devices) == 3
    assert backends.get("strict").has_float64 and not backends.get("strict:no_float64").has_float64


def test_auto_without_cupy_is_numpy(monkeypatch, no_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: there was no GPU library to try
        assert backends.get("auto").name == "numpy"


@pytest.mark.parametrize("spec", ["tpu", "gpu0", "numpy:cuda", "", "cuda:x", 3])
def test_unknown_device(spec):
    with pytest.raises(backends.BackendUnavailable) as info:
        backends.get(spec)
    msg = str(info.value)
    if spec not in ("numpy:cuda", "cuda:x"):
        assert "valid devices are" in msg
        for name in ("cpu", "cuda", "torch", "strict:device1"):
            assert name in msg
    assert nnx.BackendUnavailable is backends.BackendUnavailable


def test_unknown_strict_device_lists_its_devices():
    with pytest.raises(backends.BackendUnavailable) as info:
        backends.get("strict:device7")
    for dev in strict_backend.DEVICES:
        assert dev in str(info.value)


def test_cuda_without_cupy_names_the_package(monkeypatch, no_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: False)
    for spec in ("cuda", "cuda:1", "cupy"):
        with pytest.raises(backends.BackendUnavailable) as info:
            backends.get(spec)
        msg = str(info.value)
        assert "CuPy" in msg and "cupy-cuda12x" in msg and "--device cpu" in msg


def _fake_cupy(monkeypatch, get_device_count):
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", types.ModuleType("fake"))


def test_cupy_that_cannot_import_says_no_gpu(monkeypatch, no_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", None)
    with pytest.raises(backends.BackendUnavailable) as info:
        backends.get("cuda")
    msg = str(info.value)
    assert "no CUDA GPU is usable" in msg and "ModuleNotFoundError" in msg and "nvidia-smi" in msg


def test_cupy_without_a_gpu_says_so(monkeypatch, no_cache):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\nmore")

    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    _fake_cupy(monkeypatch, no_device)
    with pytest.raises(backends.BackendUnavailable) as info:
        backends.get("cuda:0")
    msg = str(info.value)
    assert "no CUDA GPU is usable" in msg and "no CUDA-capable device is detected" in msg
    assert "more" not in msg  # first line of the library's message only
    # auto falls back to NumPy and says why
    with pytest.warns(UserWarning, match="no CUDA GPU is usable"):
        assert backends.get("auto").name == "numpy"


def test_cuda_index_out_of_range(monkeypatch, no_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    _fake_cupy(monkeypatch, lambda: 2)
    with pytest.raises(backends.BackendUnavailable,
                       match=r"cuda:5 .* 2 GPU\(s\).*cuda:0 .. cuda:1"):
        backends.get("cuda:5")


def test_available_lists_what_works_here():
    found = backends.available()
    assert {"numpy", "strict", "strict:device1", "strict:no_float64"} <= set(found)
    assert all(isinstance(v, str) and v for v in found.values())
    assert ("torch" in found) == backends.torch_backend.is_installed()
    if not cupy_backend.is_installed():
        assert "cuda" not in found
    for spec in found:
        assert backends.get(spec).describe() == found[spec]


# --- host <-> device ---------------------------------------------------------------------

def test_asarray_copies(backend):
    host = np.arange(6.0).reshape(2, 3)
    dev = backend.asarray(host, "float32")
    host[0, 0] = 100.0
    np.testing.assert_array_equal(backend.to_numpy(dev), np.arange(6.0).reshape(2, 3))
    assert dev.dtype == backend.dtype("float32")
    assert backend.asarray([[1, 2], [3, 4]], "int64").dtype == backend.dtype("int64")


def test_to_numpy_round_trip_returns_a_copy(backend, float_dtypes):
    for dtype in float_dtypes:
        host = np.random.default_rng(0).standard_normal((4, 5)).astype(dtype)
        dev = backend.asarray(host, dtype)
        back = backend.to_numpy(dev)
        assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, host)
        back[0, 0] = 1234.0
        np.testing.assert_array_equal(backend.to_numpy(dev), host)


def test_float64_on_a_device_without_it():
    backend = backends.get("strict:no_float64")
    for call in (lambda: backend.dtype("float64"),
                 lambda: backend.asarray(np.ones(3), "float64"),
                 lambda: nnx.mlp([2, 3]).init(backend, 0, "float64")):
        with pytest.raises(backends.BackendUnavailable, match="no float64"):
            call()
    assert backend.asarray(np.ones(3), "float32").dtype == backend.dtype("float32")


def test_device_rng_state_reproduces_the_stream(backend):
    if backend.name == "cupy":
        pytest.skip("CuPy's generator state cannot be restored")
    f32 = backend.dtype("float32")
    rng = backend.device_rng(7)
    rng.uniform((3,), f32)
    state = rng.get_state()
    a = backend.to_numpy(rng.uniform((4, 5), f32))
    b = backend.to_numpy(rng.uniform((4, 5), f32))
    assert not np.array_equal(a, b)
    rng.set_state(state)
    np.testing.assert_array_equal(backend.to_numpy(rng.uniform((4, 5), f32)), a)
    np.testing.assert_array_equal(backend.to_numpy(rng.uniform((4, 5), f32)), b)
    # a fresh generator with the same seed gives the same stream; another seed does not
    again = backend.device_rng(7)
    again.uniform((3,), f32)
    np.testing.assert_array_equal(backend.to_numpy(again.uniform((4, 5), f32)), a)
    other = backend.to_numpy(backend.device_rng(8).uniform((4, 5), f32))
    assert not np.array_equal(other, a)
    assert np.all((a >= 0) & (a < 1))


def test_host_rng_is_the_same_everywhere(backend):
    np.testing.assert_array_equal(backend.rng(3).random(5), np.random.default_rng(3).random(5))
