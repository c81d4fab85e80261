"""Per-layer statistics gathered on the device during training.

Every ``every`` steps (a *sampled* step) the monitor records, for each
activation layer, the mean and standard deviation of its pre-activation ``z``
and its output ``a``, how often each unit is active (``z > 0``, for units that
can die) and saturated (within ``SATURATION_MARGIN`` of a bound of a
sigmoid/tanh-like unit); and for each weight matrix the norm of its gradient,
of the weights and of the optimizer's update. The loss of every step is kept.
The update's norm is measured on a fixed strided sample of at most
``UPDATE_SAMPLE`` entries of each matrix (every entry of a smaller one), scaled
to the whole matrix: the weights are copied there only, not whole.

All of it stays on the device as small arrays until :meth:`Monitor.flush`
copies it to the host :class:`~nnx.doctor.trace.Trace` in three transfers
(losses, sampled statistics, per-unit activity windows);
the flush happens every ``flush_every`` steps and at the end of training, so a
run has only a few host reads per epoch and none inside a step.

Activations are seen through the model's observation hook: the monitor is an
:class:`~nnx.layers.Observer` that :meth:`Monitor.attach` adds to the
``Sequential`` and :meth:`Monitor.detach` removes (in between it is there for the
sampled steps only, so the other steps pay nothing), so the layers and their
backward closures are never touched. A model without activation layers (a
linear model, a stack of custom layers) is not observed at all; its loss and
gradient norms are recorded all the same.

Usable without the Trainer::

    mon = Monitor(every=10).attach(model)
    for step in range(n):
        mon.begin_step(step)
        out, backward = model.forward(x, train=True)
        value, dout = loss(out, y)
        backward(dout, need_dx=False)
        mon.after_backward(step)
        opt.step(model)
        mon.after_update(step, value, opt.lr)
    mon.flush(); mon.detach()
"""

from __future__ import annotations

import math
from time import perf_counter

import numpy as np
from array_api_compat import is_writeable_array

from ..layers import Observer
from .findings import DEAD_MIN_ROWS
from .trace import ACT_COLUMNS, Trace, UnitLayer, Window, unit_layers

__all__ = ["Monitor", "DEFAULT_EVERY", "FLUSH_EVERY", "SATURATION_MARGIN", "UPDATE_SAMPLE",
           "update_stride", "unit_layers"]

#: sample the statistics every this many steps (the Doctor's default is 25: a sampled
#: step of the digits default costs about a fifth of a plain one more)
DEFAULT_EVERY = 10

#: the first steps are all sampled: a run that blows up does so early, and they show
#: the state the initialisation left
DENSE_START = 10

#: copy the device accumulators to the host every this many steps (and at the end)
FLUSH_EVERY = 256

#: close a window of per-unit activity counts once it holds this many sampled
#: examples: enough to call a never-active unit dead
WINDOW_ROWS = DEAD_MIN_ROWS

#: a sigmoid/tanh unit is saturated when its output lies within this distance of
#: a bound: sigmoid < 0.01 or > 0.99, |tanh| > 0.99. There the derivative is
#: below 4% (sigmoid) / 2% (tanh) of its maximum, so almost no gradient passes.
SATURATION_MARGIN = 0.01

#: the update's norm is measured on this many entries of a larger weight matrix, evenly
#: strided through it (the stride coprime with the last axis: every output unit is met),
#: scaled by size / sampled: within a few percent (sqrt(2 / 4096) = 2% for Gaussian-like
#: updates), far finer than the detectors' update-ratio thresholds, orders of magnitude
#: apart. Copying and subtracting whole matrices was two thirds of a sampled step's cost.
UPDATE_SAMPLE = 4096


def update_stride(shape) -> int:
    """The stride through a flattened parameter of ``shape`` that samples at most
    ``UPDATE_SAMPLE`` entries (1: all of them), coprime with its last axis."""
    n = math.prod(shape)
    if n <= UPDATE_SAMPLE:
        return 1
    stride = -(-n // UPDATE_SAMPLE)
    while math.gcd(stride, int(shape[-1])) != 1:
        stride += 1
    return stride

class Monitor(Observer):
    """Device-side training statistics for a :class:`~nnx.layers.Sequential` model.

    Parameters
    ----------
    every : sample statistics on every ``every``-th step, and on each of the first
        ``DENSE_START`` steps. The loss is kept for every step.
    flush_every : copy accumulated statistics to the host after this many steps.
    """

    def __init__(self, every: int = DEFAULT_EVERY, flush_every: int = FLUSH_EVERY,
                 window_rows: int = WINDOW_ROWS) -> None:
        self.every = max(1, int(every))
        self.flush_every = max(1, int(flush_every))
        self.window_rows = max(1, int(window_rows))
        self.dense_start = DENSE_START
        self.trace = Trace()
        self.model = None
        self.reads = 0  # host reads done so far (flushes)
        self.seconds = 0.0  # time spent recording activations (inside the forward passes)

    # --- attaching ------------------------------------------------------

    def attach(self, model) -> Monitor:
        """Start monitoring ``model`` (initialised): observe its activation layers."""
        if self.model is not None:
            self.detach()
        self.model = model
        self.backend = model.backend
        self.xp = model.backend.xp
        self.dtype = model.backend.dtype(model.dtype)
        # activations are seen through the Sequential observation hook, when there is one
        self._units = unit_layers(model) if hasattr(model, "add_observer") else []
        # weight matrices only: biases and BatchNorm scales say little and would double
        # the cost of a sampled step
        self._param_owners = [(la, k) for la in getattr(model, "layers", ())
                              for k, p in la.params.items() if p.ndim >= 2]
        # (stride, squared-norm scale) of each matrix's update sample
        self._update_sample = []
        for la, k in self._param_owners:
            shape, stride = tuple(la.params[k].shape), update_stride(la.params[k].shape)
            self._update_sample.append((stride, math.prod(shape) / len(range(0, math.prod(
                shape), stride))))
        params = [(la.name, k) for la, k in self._param_owners]
        self._zero = self.xp.zeros((), dtype=self.dtype, device=self.backend.device)
        self._ones_of = {}
        self.trace = Trace()
        self.trace.start([u for _, u, _ in self._units], params)
        self._bounds = [self._device_bounds(unit, acts) for _, unit, acts in self._units]
        self._position = {i: pos for pos, (i, _, _) in enumerate(self._units)}
        self._observing = bool(self._units)
        if self._observing:
            model.add_observer(self)
        self._sampling = True
        self._first_step = None
        self._layer_stats = [None] * len(self._units)
        self._elements = [1] * len(self._units)
        self._active = [None] * len(self._units)
        self._saturated = [None] * len(self._units)
        self._rows = 0
        self._window_first = None
        self._pending_windows = []
        self._pending_losses, self._pending_loss_steps = [], []
        self._pending_samples = []
        self._grad_sample = None
        self._last_step = None
        return self

    def detach(self) -> None:
        """Stop observing; the model is left exactly as it was."""
        if self.model is not None and hasattr(self.model, "remove_observer"):
            self.model.remove_observer(self)
        self.model, self._observing = None, False

    def _device_bounds(self, unit: UnitLayer, acts):
        """Saturation thresholds: scalars for one activation, per-unit arrays for mixed."""
        m = SATURATION_MARGIN
        if not unit.saturates.any():
            return None
        if len(acts) == 1:
            lo, hi = acts[0].output_range
            return lo + m, hi - m
        lo = np.array([a.output_range[0] + m if s else -np.inf
                       for a, s in zip(acts, unit.saturates)])
        hi = np.array([a.output_range[1] - m if s else np.inf
                       for a, s in zip(acts, unit.saturates)])
        dev = self.backend
        return dev.asarray(lo, self.model.dtype), dev.asarray(hi, self.model.dtype)

    def on_forward(self, index, layer, x, y, *, train) -> None:
        """Observer hook: record an activation layer's ``z`` and ``a`` on sampled steps."""
        if train and self._sampling:
            pos = self._position.get(index)
            if pos is not None:
                start = perf_counter()
                self._record_activation(pos, x, y)
                self.seconds += perf_counter() - start

    # --- recording (device only) ------------------------------------------

    def _record_activation(self, pos, z, a) -> None:
        xp = self.xp
        unit = self._units[pos][1]
        rows, size = z.shape[0], math.prod(z.shape)
        self._elements[pos] = size
        # sums and sums of squares, all four dot products (no temporaries, and on NumPy a
        # dot product with ones is three times faster than a float32 sum); the host turns
        # them into means and standard deviations
        zf, af = xp.reshape(z, (-1,)), xp.reshape(a, (-1,))
        parts = [xp.vecdot(zf, self._ones(size, zf.dtype)), xp.vecdot(zf, zf),
                 xp.vecdot(af, self._ones(size, af.dtype)), xp.vecdot(af, af)]
        # per-unit counts over every axis but the last, in examples: each position of a
        # feature map (batch, h, w, channels) counts as 1/(h*w) of its example. Only where
        # the last axis holds the units the trace was set up for.
        per_unit = z.ndim >= 2 and z.shape[-1] == unit.n
        axes = tuple(range(z.ndim - 1))
        positions = size // (rows * unit.n) if per_unit else 1
        if per_unit and unit.can_die.any():
            active = xp.sum(xp.astype(z > 0, z.dtype), axis=axes)  # (n,) rows with unit on
            active = active if positions == 1 else active / positions
            self._active[pos] = active if self._active[pos] is None else self._active[pos] + active
        bounds = self._bounds[pos]
        if per_unit and bounds is not None:
            lo, hi = bounds
            sat = xp.sum(xp.astype((a <= lo) | (a >= hi), z.dtype), axis=axes)
            sat = sat if positions == 1 else sat / positions
            self._saturated[pos] = sat if self._saturated[pos] is None else (
                self._saturated[pos] + sat)
            parts.append(xp.sum(sat) / (rows * int(unit.saturates.sum())))
        else:
            parts.append(self._zero)
        self._layer_stats[pos] = xp.stack(parts)
        if pos == 0:
            self._rows += rows

    def _ones(self, size: int, dtype):
        """A vector of ``size`` ones on the device (kept between steps)."""
        ones = self._ones_of.get(dtype)
        if ones is None or ones.shape[0] < size:
            ones = self._ones_of[dtype] = self.xp.ones((size,), dtype=dtype,
                                                       device=self.backend.device)
        return ones if ones.shape[0] == size else ones[:size]

    def begin_step(self, step: int) -> None:
        """Call before the forward pass of ``step``: decides whether it is sampled."""
        if self._first_step is None:
            self._first_step = step
        k = step - self._first_step
        self._sampling = k < self.dense_start or k % self.every == 0
        if self._units and self.model is not None and self._sampling != self._observing:
            self._observing = self._sampling  # watched on the sampled steps only
            (self.model.add_observer if self._sampling else self.model.remove_observer)(self)
        if self._sampling and self._window_first is None:
            self._window_first = step

    def after_backward(self, step: int) -> None:
        """Call when the gradients of ``step`` are ready, before the update."""
        if self._first_step is None:
            self.begin_step(step)
        if not self._sampling:
            return
        xp = self.xp
        gsq, wsq, before = [], [], []
        for (layer, key), (stride, _) in zip(self._param_owners, self._update_sample):
            w, g = layer.params[key], layer.grads[key]
            gf, wf = xp.reshape(g, (-1,)), xp.reshape(w, (-1,))
            gsq.append(xp.vecdot(gf, gf))
            wsq.append(xp.vecdot(wf, wf))
            # in-place optimizers overwrite w: keep a copy of the sampled entries
            before.append(xp.asarray(wf[::stride], copy=True) if stride > 1 or
                          is_writeable_array(w) else wf)
        self._grad_sample = (step, gsq, wsq, before)

    def after_update(self, step: int, loss, lr: float | None = None) -> None:
        """Call after the parameter update of ``step`` with its loss (0-d device array)."""
        self._pending_losses.append(loss)
        self._pending_loss_steps.append(step)
        self._last_step = step
        if self._sampling:
            self._close_sample(step, lr)
            if self._rows >= self.window_rows:
                self._close_window()
        if len(self._pending_losses) >= self.flush_every:
            self.flush()
        self._sampling = False

    def _close_sample(self, step, lr) -> None:
        xp, dt = self.xp, self.dtype
        nan_row = None
        stats = []
        for pos in range(len(self._units)):
            s = self._layer_stats[pos]
            if s is None:  # the layer did not run in this step's forward
                if nan_row is None:
                    nan_row = xp.full((len(ACT_COLUMNS),), float("nan"), dtype=dt,
                                      device=self.backend.device)
                s = nan_row
            stats.append(s if s.dtype == dt else xp.astype(s, dt))
            self._layer_stats[pos] = None
        n_p = len(self.trace.params)
        if self._grad_sample is not None and self._grad_sample[0] == step:
            _, gsq, wsq, before = self._grad_sample
            usq = []
            for (layer, key), old, (stride, scale) in zip(self._param_owners, before,
                                                          self._update_sample):
                d = xp.reshape(layer.params[key], (-1,))[::stride] - old
                usq.append(xp.vecdot(d, d) * scale if stride > 1 else xp.vecdot(d, d))
            # gradient, weight and update norms of every matrix, in that order
            norms = [xp.sqrt(xp.astype(xp.stack(gsq + wsq + usq), dt))] if n_p else []
        else:
            norms = [xp.full((3 * n_p,), float("nan"), dtype=dt, device=self.backend.device)]
        self._grad_sample = None
        flat = stats + norms
        vector = xp.concat(flat) if flat else xp.zeros((0,), dtype=dt,
                                                      device=self.backend.device)
        self._pending_samples.append((step, float("nan") if lr is None else float(lr), vector,
                                      tuple(self._elements)))

    # --- reading (host) ---------------------------------------------------

    def flush(self) -> None:
        """Copy everything accumulated on the device to the host trace."""
        xp, to_numpy = self.xp, self.backend.to_numpy
        if self._pending_losses:
            self._read_losses()
        if self._pending_samples:
            host = to_numpy(xp.stack([v for _, _, v, _ in self._pending_samples]))
            host = np.asarray(host, dtype=np.float64)
            n_l, n_p, k = len(self._units), len(self.trace.params), len(ACT_COLUMNS)
            act = host[:, :n_l * k].reshape(host.shape[0], n_l, k)
            rest = host[:, n_l * k:]
            self._moments(act, np.array([e for *_, e in self._pending_samples], dtype=np.float64))
            for li, unit in enumerate(self.trace.layers):
                if not unit.saturates.any():
                    act[:, li, 4] = np.nan
            self.trace.add_samples([s for s, *_ in self._pending_samples],
                                   [lr for _, lr, *_ in self._pending_samples], act,
                                   rest[:, :n_p], rest[:, n_p:2 * n_p], rest[:, 2 * n_p:])
            self.reads += 1
        if self._rows:
            self._close_window()
        if self._pending_windows:
            self._read_windows()
        self._pending_losses, self._pending_loss_steps, self._pending_samples = [], [], []

    def _read_losses(self) -> None:
        """Every pending step's loss to the host in one transfer."""
        losses, xp, dt = self._pending_losses, self.xp, self.dtype
        if all(hasattr(v, "shape") for v in losses):
            values = self.backend.to_numpy(xp.stack([v if v.dtype == dt else xp.astype(v, dt)
                                                     for v in losses]))
        else:
            values = [float(v) for v in losses]
        self.trace.add_losses(self._pending_loss_steps, values)
        self.reads += 1

    @staticmethod
    def _moments(act: np.ndarray, elements: np.ndarray) -> None:
        """Columns 0-3 arrive as sums and sums of squares; make them means and stds.

        ``elements`` is ``(S, L)``: how many values each sum covered.
        """
        for li in range(act.shape[1]):
            count = elements[:, li]
            for col in (0, 2):
                total, squares = act[:, li, col], act[:, li, col + 1]
                mean = total / count
                with np.errstate(invalid="ignore"):
                    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
                act[:, li, col], act[:, li, col + 1] = mean, std

    def _close_window(self) -> None:
        """Move the per-unit counts of the current window to the pending list (device)."""
        last = self._last_step if self._last_step is not None else self._window_first
        self._pending_windows.append((self._window_first, last, self._rows,
                                      self._active, self._saturated))
        self._active = [None] * len(self._units)
        self._saturated = [None] * len(self._units)
        self._rows = 0
        self._window_first = None

    def _read_windows(self) -> None:
        """Copy every pending window's counts to the host in one transfer."""
        xp, dt = self.xp, self.dtype
        parts, layout = [], []
        for first, last, rows, active, saturated in self._pending_windows:
            sizes = []
            for pos, (_, unit, _) in enumerate(self._units):
                for acc in (active[pos], saturated[pos]):
                    if acc is None:
                        sizes.append(0)
                    else:
                        parts.append(xp.astype(acc, dt))
                        sizes.append(unit.n)
            layout.append((first, last, rows, sizes))
        host = (np.asarray(self.backend.to_numpy(xp.concat(parts)), dtype=np.float64)
                if parts else np.zeros(0))
        at = 0
        for first, last, rows, sizes in layout:
            chunks = []
            for size in sizes:
                chunks.append(host[at:at + size] if size else None)
                at += size
            self.trace.windows.append(Window(first, last, rows, chunks[0::2], chunks[1::2]))
        self._pending_windows = []
