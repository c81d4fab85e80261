"""The layer contract.

A layer owns named parameters ``params`` and matching gradients ``grads``,
created on a backend by :meth:`Layer.init`. ``forward(x, *, train)`` returns
``(y, backward)``; ``backward(dy)`` *adds* the parameter gradients into
``grads`` and returns ``dx``. The closure keeps exactly what backward needs,
so a stale cache or a forward/backward mismatch cannot happen.

Batch-first layout: ``x`` has shape ``(batch, n_in)``, ``y`` ``(batch, n_out)``.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace


class Layer:
    """Base class. Subclasses set ``n_in``/``n_out`` and implement ``forward``.

    Attributes
    ----------
    params : dict name -> array of the trainable parameters (empty if none).
    grads : dict name -> array, same shapes; accumulated by ``backward``.
    state : dict name -> array of non-trainable buffers (BatchNorm statistics).
    name : unique name inside a model (``"dense_0"``), set by ``Sequential``.
    """

    #: True when ``backward`` accepts ``need_dx=False`` to skip the input gradient
    skips_dx = False

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.name: str = type(self).__name__.lower()
        self.n_in: int | None = None
        self.n_out: int | None = None

    @property
    def builtin(self) -> bool:
        """True for the layers nnx ships. Any other layer's backward is checked
        against central differences when its model is built (``Sequential.init``);
        a class may set ``builtin = True`` to skip that, or ``False`` to force it."""
        return type(self).__module__.startswith("nnx.")

    def init(self, backend, rng, dtype: str = "float32") -> None:
        """Create parameters (drawn from host ``rng``) and zero gradients on ``backend``."""
        self.backend, self.dtype = backend, dtype

    def zero_grads(self) -> None:
        """Reset every gradient to zeros (on the parameters' device)."""
        for k, p in self.params.items():
            self.grads[k] = array_namespace(p).zeros_like(p)

    def forward(self, x, *, train: bool = False):
        """Return ``(y, backward)``. Subclasses implement this."""
        raise NotImplementedError

    def __call__(self, x, *, train: bool = False):
        """Forward only (inference): the output array."""
        return self.forward(x, train=train)[0]

    def config(self) -> dict:
        """JSON-serialisable arguments that rebuild this layer (see ``nnx.layers.build``)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def check_input(layer: Layer, x) -> None:
    """Raise DataError if ``x`` is not ``(batch, layer.n_in)``."""
    from ..errors import DataError

    if x.ndim != 2 or (layer.n_in is not None and x.shape[1] != layer.n_in):
        raise DataError(
            f"layer {layer.name!r} expects input of shape (batch, {layer.n_in}), got "
            f"{tuple(x.shape)}; check the number of features in your data")
