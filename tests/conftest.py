"""Shared fixtures: one ``backend`` fixture over every array library installed here.

strict runs on three devices: its CPU device, ``device1`` (catches host arrays
and mixed devices) and ``no_float64`` (catches accidental float64). The GPU
cases (``cuda`` through CuPy, ``torch:cuda``) are marked ``gpu``, so
``pytest -m gpu`` runs only them; they skip, saying why, when no GPU is usable.
Test ids read ``[numpy]``, ``[strict:device1]``, ``[cuda]``, ...
"""

from __future__ import annotations

import os

import pytest

import nnx
from nnx import backends

os.environ.setdefault("MPLBACKEND", "Agg")

CPU_DEVICES = ["numpy", "strict", "strict:device1", "strict:no_float64", "torch"]
GPU_DEVICES = ["cuda", "torch:cuda"]
FLOAT_DTYPES = ["float32", "float64"]


def _param(device):
    marks = [pytest.mark.gpu] if device in GPU_DEVICES else []
    return pytest.param(device, id=device, marks=marks)


def get_backend_or_skip(device: str):
    """The backend for ``device``, or skip the test with the BackendUnavailable message."""
    try:
        return backends.get(device)
    except backends.BackendUnavailable as exc:
        pytest.skip(f"{device}: {exc}")


@pytest.fixture(params=[_param(d) for d in CPU_DEVICES + GPU_DEVICES])
def backend(request):
    """Every backend: numpy, strict (3 devices), torch; cupy and torch:cuda when present."""
    return get_backend_or_skip(request.param)


def float_dtypes(backend) -> list[str]:
    """The float dtype names this backend's device supports."""
    return FLOAT_DTYPES if backend.has_float64 else ["float32"]


@pytest.fixture(name="float_dtypes")
def float_dtypes_fixture(backend):
    """The float dtypes this backend's device supports (a list, for tests that loop)."""
    return float_dtypes(backend)


@pytest.fixture(params=FLOAT_DTYPES)
def float_dtype(request, backend):
    """float32 and float64 on every backend; float64 skips where the device has none."""
    if request.param not in float_dtypes(backend):
        pytest.skip(f"{backend.label} has no {request.param}")
    return request.param


@pytest.fixture(scope="module")
def blobs_400():
    """Three 2-D Gaussian blobs, 400 examples (seed 1): data of the Trainer tests."""
    return nnx.data.blobs(n=400, classes=3, seed=1)


@pytest.fixture(scope="module")
def blobs_300():
    """Three 2-D Gaussian blobs, 300 examples (seed 2): data of the Trainer tests."""
    return nnx.data.blobs(n=300, classes=3, seed=2)


# --- shared by several test files --------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One finished digits run (1 epoch) made by the CLI; tests that damage it copy it."""
    from train_command import train

    base = tmp_path_factory.mktemp("digits")
    r = train(["--epochs", "1", "--quiet", "--out", str(base / "run")], base)
    assert r.returncode == 0, r.stderr
    return base / "run"


@pytest.fixture(scope="module")
def mnist_arrays():
    """Small MNIST-format arrays (tests/mnist_files.py): train images, labels, test ones."""
    from mnist_files import sample_arrays

    return sample_arrays()


@pytest.fixture(scope="module")
def mnist_blobs(mnist_arrays):
    """``({file name: gzip bytes}, SHA-256 table)`` of :func:`mnist_arrays`."""
    from mnist_files import gzip_files

    return gzip_files(mnist_arrays)


@pytest.fixture
def dead_url():
    """A base URL on 127.0.0.1 where nothing listens."""
    from mnist_files import unused_url

    return unused_url()
