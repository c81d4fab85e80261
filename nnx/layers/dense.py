"""Fully connected layer: ``y = x @ w + b``."""

from __future__ import annotations

from ..arguments import whole_number
from ..backends import array_namespace
from ..initializers import get_initializer
from ..inplace import writeable
from .base import Layer, check_input


class Dense(Layer):
    """``y = x @ w + b`` with ``w`` of shape ``(n_in, n_out)`` and ``b`` ``(n_out,)``.

    Parameters
    ----------
    n_in, n_out : input and output features.
    init : initialiser name for ``w`` (``"auto"`` picks from ``family``).
    family : activation family that follows the layer, used by ``init="auto"``.
    bias : add the bias ``b`` (initialised to zero).
    """

    skips_dx = True

    def __init__(self, n_in: int, n_out: int, *, init: str = "auto", family: str = "relu",
                 bias: bool = True) -> None:
        super().__init__()
        self.n_in, self.n_out = (whole_number(n_in, "Dense n_in"),
                                 whole_number(n_out, "Dense n_out"))
        self.init_name, self.family, self.bias = init, family, bias
        get_initializer(init, family)  # fail early on a bad name

    def init(self, backend, rng, dtype="float32") -> None:
        super().init(backend, rng, dtype)
        _, draw = get_initializer(self.init_name, self.family)
        self.params["w"] = backend.asarray(draw(rng, (self.n_in, self.n_out), self.n_in,
                                                self.n_out), dtype)
        if self.bias:
            self.params["b"] = backend.xp.zeros((self.n_out,), dtype=backend.dtype(dtype),
                                                device=backend.device)
        self.zero_grads()

    def forward(self, x, *, train=False):
        check_input(self, x)
        xp = array_namespace(x)
        w = self.params["w"]
        # the backend's one-call products (torch addmm), for arrays of that backend only
        fast = self.backend.fast if xp is getattr(self.backend, "xp", None) else None
        if self.bias and fast is not None and fast.linear is not None:
            y = fast.linear(x, w, self.params["b"])
        else:
            y = xp.matmul(x, w)
            if self.bias:
                y = y + self.params["b"]

        def backward(dy, need_dx=True):
            # dL/dw = x^T dy (summed over the batch), dL/db = sum_batch dy, dL/dx = dy w^T
            if fast is not None and fast.addmm_ is not None and writeable(self.grads["w"]):
                fast.addmm_(self.grads["w"], x.mT, dy)  # added in place, no temporary
            else:
                self.grads["w"] += xp.matmul(x.mT, dy)
            if self.bias:
                self.grads["b"] += xp.sum(dy, axis=0)
            return xp.matmul(dy, w.mT) if need_dx else None

        return y, backward

    def config(self) -> dict:
        return {"n_in": self.n_in, "n_out": self.n_out, "init": self.init_name,
                "family": self.family, "bias": self.bias}
