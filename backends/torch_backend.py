"""PyTorch tensors on the CPU, a CUDA GPU or Apple's MPS."""

from __future__ import annotations

from ._base import Backend, BackendUnavailable
from .fast import OutKernels

NAME = "torch"
PACKAGE = "torch (pip install 'nnx-trainer[torch]')"


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def make(device: str | None = None) -> Backend:
    """Build the torch backend on ``cpu`` (default), ``cuda[:N]`` or ``mps``."""
    if not is_installed():
        raise BackendUnavailable(f"--device torch needs PyTorch; install {PACKAGE}")
    import array_api_compat.torch as xp
    import torch

    spec = device or "cpu"
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

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif dev.type == "mps":
            torch.mps.synchronize()

    label = "torch" if dev.type == "cpu" else f"torch:{dev}"
    return Backend(
        name=NAME, label=label, xp=xp, device=dev, has_float64=dev.type != "mps",
        # always a copy: .cpu().numpy() of a CPU tensor would share its memory
        _to_numpy=lambda x: x.detach().to("cpu", copy=True).numpy(),
        _sync=sync, _device_rng=TorchRng, fast=OutKernels.of_torch(),
        details=f"PyTorch {torch.__version__}, {dev}, {torch.get_num_threads()} threads",
    )
