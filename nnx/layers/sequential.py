"""Sequential: a chain of layers whose backward closures run in reverse.

Observers (:class:`Observer`) registered with :meth:`Sequential.add_observer`
see every layer's input and output as the chain runs them, and every layer's
output and input gradients on the way back: that is how the doctor watches a
model without touching its layers.
"""

from __future__ import annotations

import numbers

from ..arguments import check_seed, float_dtype
from ..errors import ConfigError
from .base import Layer
from .flat import ParameterBuffer


class Observer:
    """Sees what each layer of a :class:`Sequential` takes and gives.

    Override either method; both are called with device arrays, which an
    observer should reduce on the device (reading them on the host would add a
    synchronisation to every step). ``index`` is the layer's position in the
    model.
    """

    def on_forward(self, index: int, layer: Layer, x, y, *, train: bool) -> None:
        """After ``layer`` turned ``x`` into ``y`` (``train``: a training forward)."""

    def on_backward(self, index: int, layer: Layer, dy, dx) -> None:
        """After ``layer``'s backward turned ``dy`` (shape of ``y``) into ``dx``.

        ``dx`` is None for a first layer that skipped its input gradient.
        """


def _overrides(observer, name: str) -> bool:
    return getattr(type(observer), name, None) is not getattr(Observer, name)


def _check_and_name(layers) -> None:
    """Raise ConfigError unless ``layers`` are initialised Layers; name them ``dense_0``..."""
    if not layers:
        raise ConfigError("Sequential needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ConfigError(f"item {i} of Sequential is {type(layer).__name__}, not a "
                              "Layer; subclass nnx.Layer for your own layers")
        if not all(hasattr(layer, k) for k in ("params", "grads", "state")):
            raise ConfigError(f"layer {i} of Sequential ({type(layer).__name__}) has no "
                              "params: its __init__ must call super().__init__()")
        layer.name = f"{type(layer).__name__.lower()}_{i}"


def _input_size(layers, input_shape) -> int | None:
    """``n_in`` of the chain: the input's size when ``input_shape`` is 1-D, None for images;
    without ``input_shape``, that of the first sized layer before any that reshapes."""
    from .images import reshapes

    if input_shape is not None:
        return input_shape[0] if len(input_shape) == 1 else None
    # sizes before the first layer that reshapes (Conv2D, pooling, Flatten) are the input's
    lead = next((i for i, la in enumerate(layers) if reshapes(la)), len(layers))
    sized = [la for la in layers[:lead] if la.n_in is not None]
    return sized[0].n_in if sized else None


def _check_sizes(layers) -> None:
    """Raise ConfigError where a layer's ``n_in`` differs from the ``n_out`` before it."""
    from .images import reshapes

    prev = None
    for layer in layers:
        if layer.n_in is not None and prev is not None and layer.n_in != prev:
            raise ConfigError(f"layer {layer.name!r} expects {layer.n_in} inputs but the "
                              f"layer before it gives {prev}")
        prev = layer.n_out if layer.n_out is not None else (None if reshapes(layer) else prev)


class Sequential(Layer):
    """Chain ``layers``; ``forward`` returns ``(y, backward)`` like any layer.

    Layers get unique names (``dense_0``, ``activationlayer_1``, ...) used for
    parameters, checkpoints and the doctor's report. ``x`` is ``(batch, n_in)``,
    or images ``(batch, height, width, channels)`` when ``input_shape`` is
    ``(height, width, channels)``: every layer's shapes are then checked here
    (:func:`nnx.layers.images.infer_shapes`), and ``n_in`` is None.
    """

    #: the parameters are the layers'; ``params``/``grads``/``state`` are views
    owns_params = False
    #: observers that want ``on_forward`` / ``on_backward`` (empty: no cost at all)
    _forward_observers: tuple = ()
    _backward_observers: tuple = ()

    def __init__(self, layers, input_shape=None) -> None:
        # not Layer.__init__: parameters, gradients and buffers belong to the layers
        self.name = "sequential"
        self.layers: list[Layer] = list(layers)
        _check_and_name(self.layers)
        from .images import infer_shapes

        self.input_shape = None
        # per-example shape each layer receives (None: unknown without input_shape); the
        # build-time check of a custom layer feeds it inputs of that shape
        self._layer_inputs = [None] * len(self.layers)
        if input_shape is not None:
            shapes = infer_shapes(self.layers, input_shape)
            self.input_shape = tuple(int(s) for s in input_shape)
            self._layer_inputs = [self.input_shape, *shapes[:-1]]
        self.n_in = _input_size(self.layers, self.input_shape)
        self.n_out = next((la.n_out for la in reversed(self.layers) if la.n_out is not None),
                          None)
        _check_sizes(self.layers)
        self.backend = None
        self.dtype = "float32"

    def init(self, backend, rng=0, dtype="float32") -> Sequential:
        """Create every layer's parameters on ``backend`` (a Backend or device string).

        ``rng`` is a seed or a ``numpy.random.Generator``. Custom layers are
        gradient-checked (float64, on the host) the first time they are built.
        Returns the model, so ``model = mlp(...).init("cpu", 0)`` works.
        """
        from .. import backends

        backend, dtype = backends.get(backend), float_dtype(dtype)
        if isinstance(rng, numbers.Integral) or rng is None:
            rng = backend.rng(None if rng is None else check_seed(rng))
        self.backend, self.dtype = backend, dtype
        try:
            for layer in self.layers:
                layer.init(backend, rng, dtype)
        except MemoryError as exc:  # a size no machine holds: the user's to change
            self.backend = None
            raise ConfigError(f"the parameters of layer {layer.name!r} do not fit in memory "
                              f"({exc}); use smaller layers") from None
        for layer, shape in zip(self.layers, self._layer_inputs):
            if not getattr(layer, "builtin", True) and not getattr(layer, "_checked", False):
                from ..gradcheck import check_layer

                check_layer(layer, input_shape=shape)
                layer._checked = True
        self._buffer = ParameterBuffer.pack(self.layers, backend)
        return self

    def layer_input_shapes(self) -> list:
        """Per-example input shape of each layer, e.g. ``[(28, 28, 1), (28, 28, 32), ...]``;
        ``None`` entries when the model was built without ``input_shape``."""
        return list(self._layer_inputs)

    @property
    def params(self) -> dict:
        """Flat read-only view ``{"dense_0.w": array, ...}``; the layers own the arrays."""
        return {f"{la.name}.{k}": v for la in self.layers for k, v in la.params.items()}

    @property
    def grads(self) -> dict:
        """Flat read-only view of the gradients, keyed like :attr:`params`."""
        return {f"{la.name}.{k}": v for la in self.layers for k, v in la.grads.items()}

    @property
    def state(self) -> dict:
        """Flat read-only view of the buffers (BatchNorm running statistics)."""
        return {f"{la.name}.{k}": v for la in self.layers for k, v in la.state.items()}

    def parameters(self):
        """``[(layer_name, params, grads), ...]`` for layers that have parameters."""
        return [(la.name, la.params, la.grads) for la in self.layers if la.params]

    @property
    def parameter_buffer(self) -> ParameterBuffer | None:
        """All parameters in one flat array and all gradients in another
        (:class:`~nnx.layers.flat.ParameterBuffer`; its ``params``/``grads`` are 1-D and
        every layer's arrays are views into them), synced with the layers; None where the
        backend has no views (array-api-strict) or the model has no parameters."""
        buffer = self.__dict__.get("_buffer")
        if buffer is not None and buffer.sync():
            return buffer
        if self.backend is None:
            return None
        self._buffer = buffer = ParameterBuffer.pack(self.layers, self.backend)
        return buffer

    def zero_grads(self) -> None:
        buffer = self.parameter_buffer
        if buffer is not None:
            buffer.zero_grads()
            return
        for layer in self.layers:
            layer.zero_grads()

    # --- observers ----------------------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer.on_forward`` / ``on_backward`` for every layer from now on.

        Observers run in the order they were added; a model without observers
        pays nothing for the hook. Copies of the model (``copy.deepcopy``) are
        not observed.
        """
        if observer in self.observers:
            return
        if _overrides(observer, "on_forward"):
            self._forward_observers = (*self._forward_observers, observer)
        if _overrides(observer, "on_backward"):
            self._backward_observers = (*self._backward_observers, observer)
        self._all_observers = (*self.observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer`` (nothing happens if it was not added)."""
        for attr in ("_forward_observers", "_backward_observers", "_all_observers"):
            kept = tuple(ob for ob in getattr(self, attr, ()) if ob is not observer)
            if kept:
                setattr(self, attr, kept)
            else:
                self.__dict__.pop(attr, None)

    @property
    def observers(self) -> tuple:
        """The observers added with :meth:`add_observer`, in order."""
        return getattr(self, "_all_observers", ())

    def __getstate__(self) -> dict:
        # a copy (deepcopy, pickle) of an observed model is not observed
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_forward_observers", "_backward_observers", "_all_observers")}

    # --- forward and backward ------------------------------------------------------

    def forward(self, x, *, train=False):
        if self.backend is None:
            raise ConfigError("the model has no parameters yet; call model.init(backend, seed) "
                              "or train it with nnx.Trainer")
        seen, watching = self._forward_observers, self._backward_observers
        backwards = []
        for i, layer in enumerate(self.layers):
            y, backward = layer.forward(x, train=train)
            for ob in seen:
                ob.on_forward(i, layer, x, y, train=train)
            backwards.append((layer, backward))
            x = y

        def backward(dy, need_dx=True):
            for i in range(len(backwards) - 1, -1, -1):
                layer, step = backwards[i]
                if i == 0 and not need_dx and layer.skips_dx:
                    dx = step(dy, need_dx=False)
                else:
                    dx = step(dy)
                for ob in watching:
                    ob.on_backward(i, layer, dy, dx)
                dy = dx
            return dy

        return x, backward

    def config(self) -> dict:
        config = {"layers": [{"type": type(la).__name__, "config": la.config()}
                             for la in self.layers]}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config

    def get_weights(self, backend=None) -> dict:
        """Host copies of every parameter and buffer: ``{"dense_0.w": ndarray, ...}``."""
        out = {}
        for la in self.layers:
            for group in (la.params, la.state):
                for k, v in group.items():
                    out[f"{la.name}.{k}"] = self.backend.to_numpy(v)
        return out

    def set_weights(self, weights: dict) -> None:
        """Load host arrays from :meth:`get_weights` onto the model's backend."""
        for la in self.layers:
            for group in (la.params, la.state):
                for k, old in list(group.items()):
                    key = f"{la.name}.{k}"
                    if key not in weights:
                        raise ConfigError(f"weights have no entry {key!r}")
                    value = weights[key]
                    if tuple(value.shape) != tuple(old.shape):
                        raise ConfigError(f"{key} has shape {tuple(value.shape)}, the model "
                                          f"expects {tuple(old.shape)}")
                    group[k] = self.backend.asarray(value, self.dtype)
            la.zero_grads()

    def summary(self, print_fn=print) -> None:
        """Print one row per layer (output shape, parameter count) and the totals, with
        ``print_fn`` (one line per call); :func:`nnx.layers.summary.summary_lines`
        returns the lines."""
        from .summary import summary_lines

        for line in summary_lines(self):
            print_fn(line)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(la) for la in self.layers)
        return f"Sequential(\n  {inner}\n)"
