"""The layer contract: what a layer owns, what ``forward`` and ``backward`` do.

A layer owns named parameters ``params`` and matching gradients ``grads``,
created on a backend by :meth:`Layer.init`. ``forward(x, *, train)`` returns
``(y, backward)``; ``backward(dy)`` *adds* the parameter gradients into
``grads`` and returns ``dx``. The closure keeps exactly what backward needs,
so a stale cache or a forward/backward mismatch cannot happen.

Batch-first layout: ``x`` has shape ``(batch, n_in)``, ``y`` ``(batch, n_out)``
(images: ``(batch, height, width, channels)``).

The whole contract, with an example of a custom layer, is the docstring of
:class:`Layer` (``help(nnx.Layer)``).
"""

from __future__ import annotations

import functools
from typing import Any

from array_api_compat import array_namespace


class Layer:
    """Base class of every layer: subclass it to write your own.

    Subclasses set ``n_in``/``n_out`` and implement ``forward``; layers with
    parameters also implement ``init``. ``help(nnx.Layer)`` is the contract:

    A learnable per-feature scale, ``y = x * s``::

        from array_api_compat import array_namespace
        import nnx

        @nnx.register_layer                      # so that nnx.load can rebuild it
        class Scale(nnx.Layer):
            def __init__(self, n):
                super().__init__()
                self.n_in = self.n_out = n       # sizes, checked by Sequential

            def init(self, backend, rng, dtype="float32"):
                self.params["s"] = backend.asarray(rng.uniform(0.5, 1.5, self.n_in), dtype)
                super().init(backend, rng, dtype)

            def forward(self, x, *, train=False):
                xp = array_namespace(x)          # the array library of x
                s = self.params["s"]

                def backward(dy):
                    self.grads["s"] += xp.sum(dy * x, axis=0)   # dL/ds: add, never assign
                    return dy * s                               # dL/dx

                return x * s, backward

            def config(self):
                return {"n": self.n_in}

    The rules, one by one:

    ``__init__``
        Call ``super().__init__()``. Set ``n_in``/``n_out`` (feature counts, or leave
        them ``None`` for a layer that keeps any width) and the hyperparameters.
        Create no arrays here: the backend is not known yet.

    ``init(backend, rng, dtype)``
        Create the parameters on ``backend``. Random values are drawn on the host
        from ``rng`` (a ``numpy.random.Generator``) and copied over with
        ``backend.asarray(host_array, dtype)``, so that a seed gives the same
        weights on every backend; constants are made directly on the device with
        ``backend.xp.zeros(shape, dtype=backend.dtype(dtype), device=backend.device)``.
        Call ``super().init(backend, rng, dtype)`` before or after (or not at all):
        once your ``init`` returns, the base class has recorded ``backend`` and
        ``dtype`` and created a zero gradient for every parameter that exists.

    ``forward(x, *, train=False)``
        Return ``(y, backward)``. Take the namespace from the input,
        ``xp = array_namespace(x)`` (from ``array_api_compat``), and never import
        NumPy or another array library: the same code then runs on NumPy, CuPy,
        PyTorch and array-api-strict, and on the float64 host copy the gradient
        check uses. Arrays created here pass ``dtype=x.dtype, device=x.device``.
        ``train`` is True during training steps (dropout masks, batch statistics).
        ``forward`` may update ``state`` (reassign ``self.state[k]``) when ``train``.

    ``backward(dy)`` (the closure)
        ``dy`` is the gradient of the scalar loss with respect to ``y``, same shape
        as ``y``; the loss has already divided by the batch size, so sum over the
        batch axis, do not average. Add ``dL/dparam`` into ``self.grads[k]``
        (``+=``, or ``self.grads[k] = self.grads[k] + ...``; never plain ``=``:
        gradients accumulate until the optimizer applies and zeroes them) and
        return ``dL/dx``, the same shape as ``x``. A layer that sets
        ``skips_dx = True`` must accept ``backward(dy, need_dx=False)`` and may then
        skip the input gradient and return None (the first layer of a model never
        needs it); other layers are called as ``backward(dy)``.

    ``params``, ``grads``, ``state``
        Dicts with short keys without dots (``"w"``, ``"b"``, ``"gamma"``): a model
        names them ``"<layer name>.<key>"`` (``"scale_1.s"``) in checkpoints and
        reports. ``params`` are trained; ``state`` holds buffers that are saved and
        loaded but not trained (running statistics).

    ``config()`` and :func:`nnx.register_layer`
        ``config()`` returns the JSON-serialisable keyword arguments of the
        constructor; registering the class (``@nnx.register_layer``) lets
        ``nnx.load`` rebuild the layer from a saved model.

    Checked before training
        A layer whose class lives outside ``nnx`` is checked against float64 central
        differences (parameter and input gradients, :func:`nnx.check_layer`) the
        first time a ``Sequential`` holding it is initialised; a wrong backward
        raises :class:`~nnx.errors.DerivativeMismatch` naming the layer and entry.
        The check's input is ``(4, *shape)``, with ``shape`` the per-example shape
        the layer receives when the model has an ``input_shape`` (images
        ``(height, width, channels)``), else ``(n_in,)``.

    ``output_shape(shape)`` (optional)
        Per-example output shape for input ``shape``; called when a ``Sequential``
        is built with ``input_shape``, so a layer on images can read its channel
        count there. Without it a layer keeps its input's shape (or has
        ``n_in``/``n_out``).

    Properties that tools read
        ``stochastic`` (``forward(train=True)`` draws random numbers, e.g. Dropout),
        ``batch_dependent`` (in training, one row's output depends on the other rows
        of the batch, e.g. BatchNorm) and ``skips_dx``: attributes, False by
        default. :func:`nnx.gradcheck` uses the first two to choose the mode a
        model is checked in.

    Observed without changes
        A model's observers (:meth:`Sequential.add_observer`, used by the doctor)
        see each layer's ``x`` and ``y`` and, on the way back, ``dy`` and ``dx``;
        a layer needs nothing for that.

    Attributes
    ----------
    params : dict name -> array of the trainable parameters (empty if none).
    grads : dict name -> array, same shapes; accumulated by ``backward``.
    state : dict name -> array of non-trainable buffers (BatchNorm statistics).
    name : unique name inside a model (``"dense_0"``), set by ``Sequential``.
    backend, dtype : where and in which float dtype the parameters live (set by ``init``).
    """

    #: True when ``backward`` accepts ``need_dx=False`` to skip the input gradient
    skips_dx = False
    #: True when ``forward(x, train=True)`` draws random numbers (Dropout)
    stochastic = False
    #: True when, in training, one row's output depends on the other rows (BatchNorm)
    batch_dependent = False
    #: False for containers (Sequential) whose params/grads are views of their layers'
    owns_params = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("init")
        if own is not None and not getattr(own, "_creates_grads", False):
            cls.init = _creating_grads(own)

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.name: str = type(self).__name__.lower()
        self.n_in: int | None = None
        self.n_out: int | None = None
        self.backend = None
        self.dtype = "float32"

    @property
    def builtin(self) -> bool:
        """True for the layers nnx ships. Any other layer's backward is checked
        against central differences when its model is built (``Sequential.init``);
        a class may set ``builtin = True`` to skip that, or ``False`` to force it."""
        return type(self).__module__.startswith("nnx.")

    def init(self, backend, rng, dtype: str = "float32") -> None:
        """Create parameters (drawn from host ``rng``) and zero gradients on ``backend``.

        The base version records ``backend`` and ``dtype`` and creates a zero
        gradient for every parameter in ``params``; it runs again (for the
        gradients) after a subclass's own ``init`` returns.
        """
        self.backend, self.dtype = backend, dtype
        _fresh_grads(self)

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


def _fresh_grads(layer) -> None:
    """Give ``layer`` exactly one zero gradient per parameter, on the parameter's device.

    A layer that keeps its parameters elsewhere (``Sequential``) sets
    ``owns_params = False`` and is left alone.
    """
    if not getattr(layer, "owns_params", True):
        return
    grads = getattr(layer, "grads", None)
    if grads is None:
        layer.grads = grads = {}
    for k in [k for k in grads if k not in layer.params]:
        del grads[k]
    for k, p in layer.params.items():
        grads[k] = array_namespace(p).zeros_like(p)


def _creating_grads(init):
    """Wrap a subclass's ``init`` so that gradients exist for its parameters afterwards."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if not getattr(self, "owns_params", True):
            return init(self, *args, **kwargs)
        self.backend = None
        out = init(self, *args, **kwargs)
        if self.backend is None:  # super().init() was not called: record what it would
            self.backend = args[0] if args else kwargs.get("backend")
            self.dtype = args[2] if len(args) > 2 else kwargs.get("dtype", "float32")
        _fresh_grads(self)
        return out

    wrapper._creates_grads = True
    return wrapper


def check_input(layer: Layer, x) -> None:
    """Raise DataError if ``x`` is not ``(batch, layer.n_in)``."""
    from ..errors import DataError

    if x.ndim != 2 or (layer.n_in is not None and x.shape[1] != layer.n_in):
        raise DataError(
            f"layer {layer.name!r} expects input of shape (batch, {layer.n_in}), got "
            f"{tuple(x.shape)}; check the number of features in your data")
