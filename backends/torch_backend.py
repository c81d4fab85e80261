"""PyTorch tensors on the CPU, a CUDA GPU or Apple's MPS."""

from __future__ import annotations

import math

from . import fast
from ._base import Backend, BackendUnavailable
from .fast import Namespace, OutKernels

NAME = "torch"
PACKAGE = "torch (pip install 'nnx-trainer[torch]')"


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def namespace(base) -> Namespace:
    """array-api-compat's torch namespace with hot functions called directly where the
    arguments already share a dtype (the compat wrappers promote types first).

    ``take`` and ``take_along_axis`` skip the wrappers' ``where`` that maps negative
    indices: a negative index raises IndexError instead (nnx's batches and labels
    are never negative).
    """
    import torch

    floats = (float, int)

    def same(x1, x2) -> bool:
        return (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
                and x1.dtype == x2.dtype)

    def scalar_for(x, s) -> bool:  # a Python number beside a float tensor keeps its dtype
        return (isinstance(x, torch.Tensor) and x.dtype.is_floating_point
                and isinstance(s, floats) and not isinstance(s, bool))

    def matmul(x1, x2, /):
        return torch.matmul(x1, x2) if same(x1, x2) else base.matmul(x1, x2)

    def take(x, indices, /, *, axis=None):
        if axis is None or indices.ndim != 1:
            return base.take(x, indices, axis=axis)
        return torch.index_select(x, axis, indices)

    def take_along_axis(x, indices, /, *, axis=-1):
        return torch.take_along_dim(x, indices, dim=axis)

    scalars: dict = {}

    def scalar(s, like):
        """``s`` as a 0-d tensor of ``like``'s dtype and device, made once (what the
        wrapper makes on every call); -0.0 and 0.0 are kept apart."""
        key = (s, math.copysign(1.0, s), like.dtype, like.device)
        t = scalars.get(key)
        if t is None:
            t = torch.asarray(s, dtype=like.dtype, device=like.device)
            if len(scalars) < 256 and s == s:  # NaN keys never match: do not keep them
                scalars[key] = t
        return t

    def maximum(x1, x2, /):
        if scalar_for(x1, x2):
            return torch.maximum(x1, scalar(x2, x1))
        return torch.maximum(x1, x2) if same(x1, x2) else base.maximum(x1, x2)

    def minimum(x1, x2, /):
        if scalar_for(x1, x2):
            return torch.minimum(x1, scalar(x2, x1))
        return torch.minimum(x1, x2) if same(x1, x2) else base.minimum(x1, x2)

    def where(condition, x1, x2, /):
        if same(x1, x2) or scalar_for(x1, x2) or scalar_for(x2, x1):
            return torch.where(condition, x1, x2)
        return base.where(condition, x1, x2)

    def vecdot(x1, x2, /, *, axis=-1):
        if same(x1, x2) and x1.ndim == 1 and x2.ndim == 1 and x1.dtype.is_floating_point:
            return torch.dot(x1, x2)
        return base.vecdot(x1, x2, axis=axis)

    return Namespace(base, "torch", matmul=matmul, take=take, take_along_axis=take_along_axis,
                     maximum=maximum, minimum=minimum, where=where, vecdot=vecdot)


fast.register("array_api_compat.torch", namespace)


def _generator(torch, dev):
    """The class of per-step generators (dropout masks) on ``dev``."""

    class TorchRng:
        def __init__(self, seed):
            self._gen = torch.Generator(device=dev)
            self._gen.manual_seed(int(seed))

        def uniform(self, shape, dtype):
            return torch.rand(shape, generator=self._gen, dtype=dtype, device=dev)

        def get_state(self):
            return {"torch_state": self._gen.get_state().numpy().tolist()}

        def set_state(self, state):
            self._gen.set_state(torch.tensor(state["torch_state"], dtype=torch.uint8))

    return TorchRng


def _synchronizer(torch, dev):
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif dev.type == "mps":
            torch.mps.synchronize()

    return sync


def _device(torch, spec: str):
    """The torch.device for ``spec`` (``cpu``, ``cuda[:N]``, ``mps``), with its index."""
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(
            f"torch:{spec} requested but this PyTorch build sees no CUDA GPU "
            f"(torch {torch.__version__}); install a CUDA build of torch or use --device torch")
    mps = getattr(torch.backends, "mps", None)
    if spec == "mps" and not (mps and mps.is_available()):
        raise BackendUnavailable("torch:mps requested but MPS is not available on this machine")
    try:
        dev = torch.device(spec)
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"only {torch.cuda.device_count()} GPU(s)")
    except RuntimeError as exc:
        raise BackendUnavailable(f"bad torch device {spec!r}: {exc}") from None
    if dev.type in ("cuda", "mps") and dev.index is None:
        # tensors report "cuda:0", and torch.device("cuda") != torch.device("cuda:0")
        dev = torch.device(dev.type, torch.cuda.current_device() if dev.type == "cuda" else 0)
    return dev


def make(device: str | None = None) -> Backend:
    """Build the torch backend on ``cpu`` (default), ``cuda[:N]`` or ``mps``."""
    if not is_installed():
        raise BackendUnavailable(f"--device torch needs PyTorch; install {PACKAGE}")
    import array_api_compat.torch as xp
    import torch

    dev = _device(torch, device or "cpu")
    label = "torch" if dev.type == "cpu" else f"torch:{dev}"
    return Backend(
        name=NAME, label=label, xp=fast.fast_namespace(xp), device=dev,
        has_float64=dev.type != "mps",
        # always a copy: .cpu().numpy() of a CPU tensor would share its memory
        _to_numpy=lambda x: x.detach().to("cpu", copy=True).numpy(),
        _sync=_synchronizer(torch, dev), _device_rng=_generator(torch, dev), flat_params=True,
        fast=OutKernels.of_torch(),
        details=f"PyTorch {torch.__version__}, {dev}, {torch.get_num_threads()} threads",
    )
