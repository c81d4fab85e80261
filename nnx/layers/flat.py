"""One flat buffer for every parameter of a model, and one for every gradient.

On libraries whose slices and reshapes are views that write through (NumPy, CuPy,
PyTorch: ``backend.flat_params``), :class:`~nnx.layers.Sequential` keeps all its
layers' parameters in one contiguous 1-D array and all their gradients in another.
Each ``layer.params[k]`` and ``layer.grads[k]`` is a view into them, so layers
read and write their own arrays exactly as before, while an optimizer updates
every parameter with a handful of whole-buffer operations and data-parallel
training sums every gradient with one all-reduce of :attr:`ParameterBuffer.grads`.

Where views are not guaranteed (array-api-strict) there is no buffer and every
parameter is its own array.

A layer (or a user) that *reassigns* a parameter or gradient
(``layer.params["w"] = new``) instead of updating it in place breaks the link;
:meth:`ParameterBuffer.sync` notices that, copies the new values into the
buffer and points the dict back at the view. Everything that reads the buffer
calls it first, so reassignment stays correct, just slower.
"""

from __future__ import annotations

from ..backends import array_namespace

__all__ = ["ParameterBuffer", "ALIGN"]

#: each parameter starts at a multiple of this many elements (64 bytes in float32),
#: so that matrix products see aligned rows; the gaps hold zeros
ALIGN = 16


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _layout(layers):
    """``[(layer, key, shape), ...]`` of every parameter, in forward order; the dtype
    (None if the parameters do not share one, or there are none)."""
    entries, dtypes = [], set()
    for la in layers:
        for k, p in la.params.items():
            entries.append((la, k, tuple(p.shape)))
            dtypes.add(p.dtype)
    return entries, (dtypes.pop() if len(dtypes) == 1 else None)


class ParameterBuffer:
    """The flat parameter and gradient buffers of a list of layers.

    Attributes
    ----------
    params : 1-D array of ``size`` elements; ``layer.params[k]`` are views into it.
    grads : 1-D array of ``size`` elements, same layout; ``layer.grads[k]`` are views.
    names : ``["dense_0.w", "dense_0.b", ...]``, in forward order.
    offsets : ``{name: (start, stop, shape)}``: where each parameter lives.
    size : elements of each buffer (the parameters plus alignment gaps, which stay 0).

    Build it with :meth:`pack` (None when the layers have no parameters or their
    dtypes differ). Call :meth:`sync` before reading the buffers directly.
    """

    def __init__(self, layers, backend, entries, dtype) -> None:
        xp = backend.xp
        self.backend, self.layers, self.dtype = backend, list(layers), dtype
        self.offsets: dict[str, tuple[int, int, tuple]] = {}
        start = 0
        for la, k, shape in entries:
            start = -(-start // ALIGN) * ALIGN
            self.offsets[f"{la.name}.{k}"] = (start, start + _size(shape), shape)
            start += _size(shape)
        self.size = start
        self.names = list(self.offsets)
        self.params = xp.zeros((start,), dtype=dtype, device=backend.device)
        self.grads = xp.zeros((start,), dtype=dtype, device=backend.device)
        self._keys = [(la, k) for la, k, _ in entries]
        self._pviews = self.views(self.params)
        self._gviews = self.views(self.grads)
        self._counts = [(la, len(la.params)) for la in self.layers]
        for (la, k), pv, gv in zip(self._keys, self._pviews, self._gviews):
            pv[...] = la.params[k]
            gv[...] = la.grads[k] if k in la.grads else 0
            la.params[k], la.grads[k] = pv, gv

    @classmethod
    def pack(cls, layers, backend) -> ParameterBuffer | None:
        """Move the parameters and gradients of ``layers`` into flat buffers on ``backend``.

        Returns None (and changes nothing) when ``backend.flat_params`` is false, there
        are no parameters, or they do not share one dtype.
        """
        if not getattr(backend, "flat_params", False):
            return None
        entries, dtype = _layout(layers)
        if not entries or dtype is None:
            return None
        return cls(layers, backend, entries, dtype)

    def views(self, flat) -> list:
        """Views of ``flat`` (a 1-D array of ``size`` elements) shaped like each parameter,
        in the order of :attr:`names`."""
        xp = array_namespace(flat)
        return [xp.reshape(flat[a:b], shape) for a, b, shape in self.offsets.values()]

    # --- keeping the layers' dicts and the buffers one ---------------------------------

    def intact(self) -> bool:
        """True when every layer's dicts still hold the buffer's views (nothing reassigned)."""
        for (la, k), pv, gv in zip(self._keys, self._pviews, self._gviews):
            if la.params.get(k) is not pv or la.grads.get(k) is not gv:
                return False
        return all(len(la.params) == n for la, n in self._counts)

    def matches(self, layers) -> bool:
        """True when ``layers`` have the parameters (names, shapes, dtype) of this buffer."""
        entries, dtype = _layout(layers)
        return dtype == self.dtype and [
            (f"{la.name}.{k}", shape) for la, k, shape in entries] == [
            (name, shape) for name, (_, _, shape) in self.offsets.items()]

    def sync(self) -> bool:
        """Make the buffers hold every layer's current parameters and gradients.

        A parameter or gradient that was reassigned is copied into its view and
        the dict points at the view again. Returns False when the layers no
        longer have this buffer's parameters (added, removed or reshaped): the
        caller must :meth:`pack` a new buffer.
        """
        if self.intact():
            return True
        if not self.matches(self.layers):
            return False
        for (la, k), pv, gv in zip(self._keys, self._pviews, self._gviews):
            p, g = la.params[k], la.grads.get(k)
            if p is not pv:
                pv[...] = p
                la.params[k] = pv
            if g is not gv:
                gv[...] = 0 if g is None else g
                la.grads[k] = gv
        return True

    def zero_grads(self) -> None:
        """Set every gradient to zero (one operation); reassigned ones are reattached."""
        for (la, k), gv in zip(self._keys, self._gviews):
            if la.grads.get(k) is not gv:
                la.grads[k] = gv
        self.grads[...] = 0

    # a copy's views must be views of the copy's own buffers: copies pack again
    def __getstate__(self) -> dict:
        return {"layers": self.layers, "backend": self.backend}

    def __setstate__(self, state: dict) -> None:
        entries, dtype = _layout(state["layers"])
        self.__init__(state["layers"], state["backend"], entries, dtype)
