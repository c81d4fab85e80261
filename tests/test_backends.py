"""Backends: device strings, what a missing library or GPU says, copies, dtypes, generators."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
from array_api_compat import device as device_of
from nnx.backends import cupy_backend, strict_backend, torch_backend
from nnx.backends._base import Backend

from nnx import backends
from nnx.errors import BackendUnavailable


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty backend cache, so a faked library cannot leak into other tests."""
    monkeypatch.setattr(backends, "_cache", {})


# --- device strings -----------------------------------------------------------------

def test_cpu_and_numpy_are_one_backend():
    cpu = backends.get("cpu")
    assert cpu is backends.get("numpy") is backends.get(" NumPy ")
    assert (cpu.name, cpu.label, cpu.device) == ("numpy", "numpy", "cpu")
    assert backends.get(cpu) is cpu
    assert "NumPy" in cpu.describe()


@pytest.mark.parametrize("spec, label, has_float64", [
    ("strict", "strict", True),
    ("strict:device1", "strict:device1", True),
    ("strict:no_float64", "strict:no_float64", False),
])
def test_strict_devices(spec, label, has_float64):
    pytest.importorskip("array_api_strict")
    b = backends.get(spec)
    assert (b.name, b.label, b.has_float64) == ("strict", label, has_float64)
    x = b.asarray([1.0, 2.0], "float32")
    assert device_of(x) == b.device
    if spec != "strict":  # a non-default device: its arrays do not mix with the CPU device's
        y = backends.get("strict").asarray([1.0, 2.0], "float32")
        with pytest.raises(ValueError):
            x + y


def test_torch_is_the_cpu():
    torch = pytest.importorskip("torch")
    b = backends.get("torch")
    assert (b.name, b.label) == ("torch", "torch")
    x = b.asarray(np.ones(3), "float32")
    assert isinstance(x, torch.Tensor) and x.device.type == "cpu"
    assert x.dtype == torch.float32


def test_auto_without_cupy_is_numpy(monkeypatch, fresh_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say when there is no CuPy at all
        assert backends.get("auto").name == "numpy"


def test_auto_says_why_it_fell_back(monkeypatch, fresh_cache):
    def no_gpu(device=None):
        raise BackendUnavailable("CuPy is installed but no CUDA GPU is usable (no driver)")

    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    monkeypatch.setattr(cupy_backend, "make", no_gpu)
    with pytest.warns(UserWarning, match="no CUDA GPU is usable.*using NumPy"):
        assert backends.get("auto").name == "numpy"


def test_auto_says_what_it_chose(monkeypatch, fresh_cache):
    import array_api_compat.numpy as xp

    fake = Backend(name="cupy", label="cuda:0", xp=xp, device="cpu", details="a test GPU")
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    monkeypatch.setattr(cupy_backend, "make", lambda device=None: fake)
    with pytest.warns(UserWarning, match="using cuda:0 \\(a test GPU\\)"):
        assert backends.get("auto") is fake


@pytest.mark.parametrize("spec", ["tpu", "cuda0", "numpy:gpu", "", "  ", None, 3])
def test_unknown_device_lists_the_valid_ones(spec):
    with pytest.raises(BackendUnavailable) as info:
        backends.get(spec)
    msg = str(info.value)
    for valid in ("cpu", "cuda", "torch", "strict:device1", "strict:no_float64"):
        assert valid in msg


def test_bad_device_of_a_known_library():
    pytest.importorskip("array_api_strict")
    with pytest.raises(BackendUnavailable, match="device9.*cpu, device1, no_float64"):
        backends.get("strict:device9")
    with pytest.raises(BackendUnavailable, match="CPU only"):
        backends.MODULES["numpy"].make("gpu")


def test_cuda_without_cupy_names_the_package(monkeypatch, fresh_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: False)
    for spec in ("cuda", "cuda:1", "cupy", "gpu"):
        with pytest.raises(BackendUnavailable) as info:
            backends.get(spec)
        msg = str(info.value)
        assert "CuPy" in msg and "cupy-cuda12x" in msg and "pip install" in msg
        assert "--device cpu" in msg


def test_cupy_without_a_gpu_says_so(monkeypatch, fresh_cache):
    """CuPy installed on a machine without a usable GPU: a message about the driver."""
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\nmore")

    fake_cupy = types.ModuleType("cupy")
    fake_cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", types.ModuleType("xp"))
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    with pytest.raises(BackendUnavailable) as info:
        backends.get("cuda")
    msg = str(info.value)
    assert "no CUDA GPU is usable" in msg and "cudaErrorNoDevice" in msg
    assert "nvidia-smi" in msg and "more" not in msg  # first line of the cause only
    assert "cupy:cuda" not in backends._cache


def test_cuda_index_out_of_range(monkeypatch, fresh_cache):
    fake_cupy = types.ModuleType("cupy")
    fake_cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", types.ModuleType("xp"))
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: True)
    with pytest.raises(BackendUnavailable, match="cuda:3 requested but 1 GPU"):
        backends.get("cuda:3")
    with pytest.raises(BackendUnavailable, match="bad CUDA device"):
        cupy_backend.make("cuda:x")


def test_missing_torch_and_strict_name_their_packages(monkeypatch, fresh_cache):
    monkeypatch.setattr(torch_backend, "is_installed", lambda: False)
    monkeypatch.setattr(strict_backend, "is_installed", lambda: False)
    with pytest.raises(BackendUnavailable, match="pip install 'nnx-trainer\\[torch\\]'"):
        backends.get("torch")
    with pytest.raises(BackendUnavailable, match="array-api-strict"):
        backends.get("strict:device1")


def test_torch_cuda_without_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailable, match="sees no CUDA GPU"):
        backends.get("torch:cuda")


def test_available_lists_what_works(monkeypatch, fresh_cache):
    monkeypatch.setattr(cupy_backend, "is_installed", lambda: False)
    found = backends.available()
    assert found["numpy"] == backends.get("numpy").describe()
    assert "cuda" not in found
    if strict_backend.is_installed():
        assert {"strict", "strict:device1", "strict:no_float64"} <= set(found)
    assert ("torch" in found) == torch_backend.is_installed()
    for spec, text in found.items():
        assert isinstance(text, str) and text
        assert backends.get(spec).describe() == text


# --- the Backend object, on every backend ----------------------------------------------

def test_asarray_copies_the_host_array(backend, float_dtype):
    host = np.arange(6.0).reshape(2, 3)
    x = backend.asarray(host, float_dtype)
    host[0, 0] = 100.0
    assert device_of(x) == backend.device
    assert x.dtype == backend.dtype(float_dtype)
    assert tuple(x.shape) == (2, 3)
    np.testing.assert_array_equal(backend.to_numpy(x), np.arange(6.0).reshape(2, 3))


def test_asarray_casts_on_the_host(backend):
    x = backend.asarray(np.array([1.5, 2.5]), backend.xp.float32)  # a namespace dtype works too
    assert x.dtype == backend.xp.float32
    labels = backend.asarray([0, 2, 1], "int64")
    assert labels.dtype == backend.xp.int64 and device_of(labels) == backend.device


def test_to_numpy_round_trip_is_a_copy(backend, float_dtype):
    host = np.random.default_rng(0).standard_normal((3, 4)).astype(float_dtype)
    x = backend.asarray(host, float_dtype)
    back = backend.to_numpy(x)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(float_dtype)
    np.testing.assert_array_equal(back, host)
    back[:] = 0.0  # the caller may keep (and change) it while training goes on
    np.testing.assert_array_equal(backend.to_numpy(x), host)


def test_dtype_names(backend):
    xp = backend.xp
    assert backend.dtype() == xp.float32 and backend.dtype("int64") == xp.int64
    with pytest.raises(BackendUnavailable, match="not available"):
        backend.dtype("float128x")
    if backend.has_float64:
        assert backend.dtype("float64") == xp.float64


def test_no_float64_device_refuses_float64():
    pytest.importorskip("array_api_strict")
    b = backends.get("strict:no_float64")
    assert not b.has_float64
    with pytest.raises(BackendUnavailable, match="no float64.*float32"):
        b.dtype("float64")
    with pytest.raises(BackendUnavailable, match="no float64"):
        b.asarray(np.ones(2), "float64")
    assert b.asarray(np.ones(2), "float32").dtype == b.xp.float32


def test_host_rng_is_the_same_everywhere(backend):
    np.testing.assert_array_equal(backend.rng(7).standard_normal(5),
                                  np.random.default_rng(7).standard_normal(5))


def test_device_rng(backend, float_dtype):
    gen = backend.device_rng(3)
    u = gen.uniform((200, 5), backend.dtype(float_dtype))
    assert tuple(u.shape) == (200, 5) and u.dtype == backend.dtype(float_dtype)
    assert device_of(u) == backend.device
    h = backend.to_numpy(u)
    assert h.min() >= 0.0 and h.max() < 1.0 and 0.4 < h.mean() < 0.6
    if backend.name == "cupy":
        pytest.skip("CuPy's generator state cannot be restored")
    state = gen.get_state()
    first = backend.to_numpy(gen.uniform((4,), backend.dtype(float_dtype)))
    gen.set_state(state)
    again = backend.to_numpy(gen.uniform((4,), backend.dtype(float_dtype)))
    np.testing.assert_array_equal(first, again)
    other = backend.to_numpy(backend.device_rng(4).uniform((4,), backend.dtype(float_dtype)))
    assert not np.array_equal(first, other)


def test_synchronize_and_describe(backend):
    backend.synchronize()
    assert backend.describe().startswith(backend.label)
    assert repr(backend) == f"Backend({backend.label!r})"
