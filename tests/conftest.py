"""Shared fixtures: one ``backend`` fixture over every array library installed here.

strict runs on three devices: its CPU device, ``device1`` (catches host arrays
and mixed devices) and ``no_float64`` (catches accidental float64). The GPU
cases are marked ``gpu`` and skip when no GPU is usable.
"""

from __future__ import annotations

import os

import pytest

import backends

os.environ.setdefault("MPLBACKEND", "Agg")

CPU_DEVICES = ["numpy", "strict", "strict:device1", "strict:no_float64", "torch"]
GPU_DEVICES = ["cuda", "torch:cuda"]


def _param(device):
    marks = [pytest.mark.gpu] if device in GPU_DEVICES else []
    return pytest.param(device, id=device, marks=marks)


def get_backend_or_skip(device: str):
    """The backend for ``device``, or skip the test saying why it is unavailable."""
    try:
        return backends.get(device)
    except backends.BackendUnavailable as exc:
        pytest.skip(f"{device}: {exc}")


@pytest.fixture(params=[_param(d) for d in CPU_DEVICES + GPU_DEVICES])
def backend(request):
    """Every backend: numpy, strict (3 devices), torch; cupy and torch:cuda when present."""
    return get_backend_or_skip(request.param)


@pytest.fixture
def float_dtypes(backend):
    """The float dtypes this backend's device supports."""
    return ["float32", "float64"] if backend.has_float64 else ["float32"]


def tolerance(dtype: str) -> float:
    """Relative tolerance for comparing a result in ``dtype`` with a float64 reference."""
    return 1e-5 if dtype == "float32" else 1e-12
