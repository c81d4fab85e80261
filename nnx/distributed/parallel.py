"""What a Trainer does differently when K ranks train one model (data parallelism).

The semantics are those of Horovod, PyTorch DDP and ChainerMN:

- every rank holds the whole training set and draws the same epoch order
  (the shuffle generator's state is broadcast from rank 0); the batch size is
  the *global* batch, and rank ``r`` takes positions ``r, r + K, r + 2K, ...``
  of each global batch (:meth:`DataParallel.share`);
- each rank scales its loss gradient by ``m_r / m`` (its examples over the
  global batch's), so its backward pass yields its share of the gradient of the
  global-batch mean; the shares are summed once per step in one flat buffer
  (:meth:`DataParallel.reduce_gradients`: one all-reduce per step, never one per
  parameter). An uneven last batch is therefore exact, which a mean of per-rank
  means is not;
- parameters, buffers and optimizer state start as rank 0's (broadcast), so
  even ranks seeded differently train one model;
- dropout masks come from one stream per (seed, rank, layer) (:func:`rank_seed`);
- metric sums are all-reduced at logging points, so every rank logs the same
  numbers and callbacks decide the same way; only rank 0 prints and writes;
- BatchNorm normalises by each rank's own rows (local statistics) unless
  ``sync_batchnorm``, which all-reduces the batch statistics and their
  gradients (:class:`BatchSync`: three small all-reduces per BatchNorm layer
  per step). With local statistics the running statistics of rank 0 are the
  model's, as DDP's broadcast buffers are: :meth:`DataParallel.epoch_end`
  broadcasts them before validation and checkpoints.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import CheckpointError, ConfigError, DistributedError
from .comm import Communicator

__all__ = ["DataParallel", "BatchSync", "rank_seed", "check_world_size"]


def rank_seed(seed: int, rank: int, index: int) -> int:
    """Seed of the dropout stream of layer ``index`` on ``rank`` for a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(index)]).generate_state(1)[0]
               >> 1)


class BatchSync:
    """Sums over every rank's rows for a BatchNorm layer (``layer.sync``).

    ``count`` is the number of examples of the current global batch;
    ``sum(a)`` returns the element-wise sum of the 1-D device array ``a`` over
    the ranks.
    """

    def __init__(self, comm: Communicator, backend) -> None:
        self.comm, self.backend = comm, backend
        self.count = 0

    def sum(self, a):
        xp = self.backend.xp
        return self.comm.allreduce_(xp.asarray(a, copy=True), self.backend)


def check_world_size(meta, size: int, source) -> None:
    """CheckpointError unless the checkpoint metadata ``meta`` was saved by ``size`` ranks."""
    saved = meta.get("world_size", 1) if isinstance(meta, dict) else 1
    if saved != size:
        raise CheckpointError(
            f"{source} was written by a run on {saved} rank(s), this one has {size}; resume "
            f"it with the same count (mpiexec -n {saved} ...): the batch split, the dropout "
            "streams and the batch statistics depend on the number of ranks")


def _crc(a) -> int:
    a = np.ascontiguousarray(a)
    return zlib.crc32(a.view(np.uint8).reshape(-1)) if a.size else 0


class DataParallel:
    """The data-parallel side of one Trainer on communicator ``comm``.

    ``active`` is False for one rank: then nothing here is called per step.
    """

    def __init__(self, comm: Communicator, *, sync_batchnorm: bool = False) -> None:
        if not isinstance(sync_batchnorm, bool):
            raise ConfigError(f"sync_batchnorm must be True or False, got {sync_batchnorm!r}")
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self.sync_batchnorm = bool(sync_batchnorm)
        self.syncs: list[BatchSync] = []
        self.rank_rngs: list | None = None  # every rank's dropout states, at the last gather
        self.rank_sums: list | None = None  # every rank's metric sums, at an interruption
        self._resume_sums: list | None = None
        self._layout: list | None = None
        #: set by each step's all-reduce: some rank asked to stop (Ctrl-C, SIGTERM)
        self.stop = False
        #: seconds spent in, and number of, the gradient all-reduces (for benchmarks)
        self.reduce_seconds, self.reduce_count = 0.0, 0

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints and writes files (always, for one process)."""
        return self.rank == 0

    def stopping(self, requested: bool) -> bool:
        """Whether training stops after this step: the local request, or with several ranks
        every rank's requests as summed by the step's all-reduce (all stop at one step)."""
        return self.stop if self.active else requested

    @property
    def share_of_batches(self) -> tuple[int, int]:
        """``(rank, size)``: which rows of each global batch this rank takes."""
        return self.rank, self.size

    def local_callbacks(self, callbacks) -> list:
        """The callbacks this rank runs: all on rank 0; elsewhere those not ``rank0_only``
        (progress bars, loggers, checkpoints: what prints or writes)."""
        if self.rank == 0:
            return list(callbacks)
        return [cb for cb in callbacks if not getattr(cb, "rank0_only", False)]

    @property
    def active(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"{self.size} ranks over {self.comm.describe()}"

    # --- set-up -----------------------------------------------------------------

    def prepare(self, trainer) -> None:
        """Once the model is on its device: rank 0's state everywhere, one dropout stream
        per rank, BatchNorm statistics over every rank when asked."""
        if not self.active:
            return
        self.broadcast_state(trainer)
        model, backend = trainer.model, trainer.backend
        for index, layer in enumerate(model.layers):
            if getattr(layer, "rng", None) is not None:
                layer.rng = backend.device_rng(rank_seed(trainer.seed, self.rank, index))
        self.syncs = []
        for layer in model.layers:
            if type(layer).__name__ == "BatchNorm":
                layer.sync = None
                if self.sync_batchnorm:
                    layer.sync = BatchSync(self.comm, backend)
                    self.syncs.append(layer.sync)

    def _state_arrays(self, trainer) -> list:
        """``(dict, key)`` of every parameter, buffer and optimizer slot, in one fixed order."""
        model, opt = trainer.model, trainer.optimizer
        found = [(group, k) for la in model.layers for group in (la.params, la.state)
                 for k in sorted(group)]
        for name in sorted(opt.state):
            found += [(opt.state[name], s) for s in sorted(opt.state[name])]
        return found

    def broadcast_state(self, trainer) -> None:
        """Parameters, buffers, optimizer state and shuffle generator of rank 0 on every rank."""
        if not self.active:
            return
        opt = trainer.optimizer
        meta = self.comm.bcast_object({"t": opt.t, "slots": sorted(opt.state),
                                       "rng": trainer.rng.bit_generator.state})
        if sorted(opt.state) != meta["slots"]:
            raise DistributedError(f"rank {self.rank} holds optimizer state for other "
                                   "parameters than rank 0; build the same model on every rank")
        opt.t = meta["t"]
        trainer.rng.bit_generator.state = meta["rng"]
        self._move(self._state_arrays(trainer), trainer.backend, self.comm.broadcast_)

    def _move(self, arrays, backend, collective):
        """Run ``collective`` on the arrays packed in one flat buffer per dtype."""
        xp = backend.xp
        by_dtype: dict = {}
        for d, k in arrays:
            by_dtype.setdefault(str(d[k].dtype), []).append((d, k))
        for group in by_dtype.values():
            flat = xp.concat([xp.reshape(d[k], (-1,)) for d, k in group])
            flat = collective(flat, backend)
            self._unpack(flat, group)

    @staticmethod
    def _unpack(flat, group) -> None:
        from .. import inplace

        xp, at = None, 0
        for d, k in group:
            if xp is None:
                from array_api_compat import array_namespace

                xp = array_namespace(flat)
            n = int(np.prod(d[k].shape, dtype=np.int64))
            inplace.copy_(d, k, xp.reshape(flat[at:at + n], d[k].shape))
            at += n

    def check_data(self, trainer, x, y) -> None:
        """Every rank must train on the same examples: compare sizes and checksums."""
        if not self.active:
            return
        last = trainer.n_train - (trainer.steps_per_epoch - 1) * trainer.batch_size
        if self.syncs and min(last, trainer.batch_size) < self.size:
            raise ConfigError(
                f"with sync_batchnorm every batch needs at least one example per rank, but the "
                f"last batch of {trainer.n_train} examples in batches of {trainer.batch_size} "
                f"has {last} for {self.size} ranks; change the batch size")
        mine = {"n": int(x.shape[0]), "batch_size": trainer.batch_size, "x": _crc(x),
                "y": _crc(y)}
        every = self.comm.allgather_object(mine)
        for r, theirs in enumerate(every):
            diff = [k for k in mine if theirs[k] != every[0][k]]
            if diff:
                raise DistributedError(
                    f"rank {r} has other training data than rank 0 ({', '.join(diff)} differ); "
                    "every rank passes the whole training set (split the same way: the same "
                    "seed for validation_split) and the same batch size, and takes its share "
                    "of each batch itself")

    # --- steps ------------------------------------------------------------------

    def share(self, lo: int, hi: int) -> tuple[int, int, float]:
        """This rank's positions ``lo + rank, lo + rank + K, ...`` below ``hi`` of a global
        batch ``[lo, hi)``, as ``(start, count, weight)``: ``weight`` scales the loss
        gradient (this rank's examples over the global batch's)."""
        m = hi - lo
        count = max(0, -(-(m - self.rank) // self.size))
        for sync in self.syncs:
            sync.count = m
        return lo + self.rank, count, count / m

    def loss_weight(self, mine: int, m: int) -> float:
        """The factor of this rank's loss gradient: its ``mine`` examples of the global
        batch's ``m``, so that the summed gradients are those of the global mean."""
        return mine / m

    def forward_backward(self, trainer, xb, yb, run, b):
        """This rank's forward and backward pass on its rows ``xb``, ``yb`` of global batch
        ``b``, then the gradients summed over the ranks.

        Returns ``(output, value, total)``: this rank's outputs (None when the rank has
        no row in this batch) and mean loss, and the loss summed over the global batch
        (0-d, the same on every rank: what the non-finite checks look at).
        """
        import time

        backend = trainer.backend
        xp = backend.xp
        lo, hi = run.batches.span(b)
        m, mine = hi - lo, xb.shape[0]
        for sync in self.syncs:
            sync.count = m
        self.comm.position = f"at step {trainer.step} (epoch {run.epoch + 1})"
        zero = xp.zeros((), dtype=backend.dtype(trainer.dtype), device=backend.device)
        value, out = zero, None
        if mine:
            out, backward = trainer.model.forward(xb, train=True)
            value, dout = trainer.loss(out, yb)
            # the gradient of the global batch's mean: this rank's share of it
            backward(dout * self.loss_weight(mine, m), need_dx=False)
        flag = xp.asarray(1.0 if trainer._interrupt else 0.0, dtype=zero.dtype,
                          device=backend.device)
        start = time.perf_counter()
        total, stops = self.reduce_gradients(trainer.model, backend, [value * mine, flag])
        self.stop = bool(stops > 0)  # a host read: all ranks stop after the same step
        self.reduce_seconds += time.perf_counter() - start
        self.reduce_count += 1
        return out, value, total

    def _grad_layout(self, model):
        entries = [(grads, k) for _, _, grads in model.parameters() for k in sorted(grads)]
        key = [(id(g), k, tuple(g[k].shape)) for g, k in entries]
        if self._layout is None or self._layout[0] != key:
            self._layout = (key, entries)
        return self._layout[1]

    def gradient_bytes(self, model) -> int:
        """Bytes of the flat gradient buffer one step all-reduces (without the two extras)."""
        return sum(int(np.prod(g[k].shape)) * np.dtype(str(g[k].dtype).split(".")[-1]).itemsize
                   for g, k in self._grad_layout(model))

    def reduce_gradients(self, model, backend, extras) -> list:
        """Sum every gradient over the ranks in one flat buffer, with ``extras`` (0-d device
        arrays, e.g. the step's loss sum and the interrupt flag) at its end; the
        gradients are replaced by the sums and the summed extras are returned (0-d)."""
        xp = backend.xp
        entries = self._grad_layout(model)
        dtype = entries[0][0][entries[0][1]].dtype if entries else backend.dtype(model.dtype)
        parts = [xp.reshape(g[k], (-1,)) for g, k in entries]
        parts += [xp.reshape(xp.astype(e, dtype), (1,)) for e in extras]
        flat = self.comm.allreduce_(xp.concat(parts), backend)
        self._unpack(flat, entries)
        n = flat.shape[0] - len(extras)
        return [flat[n + i] for i in range(len(extras))]

    # --- logging points and checkpoints -----------------------------------------

    def reduce_sums(self, sums) -> None:
        """All-reduce a :class:`~nnx.train.metrics.MetricSums` in place: every rank then
        holds the sums and the count of the global epoch."""
        if not self.active:
            return
        names = sorted(sums.sums)
        local = sums.state()
        totals = self.comm.allreduce_host(
            np.array([float(local[k]) for k in names] + [float(sums.seen)], np.float64))
        backend_xp = _namespace(sums.sums[names[0]])
        for k, v in zip(names, totals[:-1]):
            old = sums.sums[k]
            sums.sums[k] = backend_xp.asarray(int(v) if "int" in str(old.dtype) else float(v),
                                              dtype=old.dtype, device=_device(old))
        sums.seen = int(totals[-1])

    def interrupted(self, trainer, sums) -> None:
        """Training stops inside an epoch: gather every rank's metric sums so far and its
        dropout states, so that a resume continues each rank exactly (a checkpoint holds
        them, :meth:`load_sums` puts them back)."""
        if not self.active:
            return
        self.rank_sums = self.comm.allgather_object({"sums": sums.state(), "seen": sums.seen})
        self._gather_rngs(trainer.model)

    def load_sums(self, sums, saved: dict, seen: int) -> None:
        """Start an epoch's ``sums`` from a resume point: ``saved`` and ``seen`` for one
        process, this rank's own sums of the checkpoint for several."""
        if not self.active:
            sums.load(saved, seen)
        elif self._resume_sums is not None:
            mine, self._resume_sums = self._resume_sums[self.rank], None
            sums.load(mine["sums"], mine["seen"])

    def _gather_rngs(self, model) -> None:
        rngs = {la.name: la.rng.get_state() for la in model.layers
                if getattr(la, "rng", None) is not None}
        self.rank_rngs = self.comm.allgather_object(rngs) if rngs else None

    def logging_point(self, trainer, sums) -> None:
        """Where every rank reads the same numbers: the metric ``sums`` all-reduced, rank 0's
        BatchNorm running statistics everywhere (with local statistics), and every rank's
        dropout states gathered for checkpoints."""
        if not self.active:
            return
        self.reduce_sums(sums)
        model = trainer.model
        if not self.sync_batchnorm:
            buffers = [(la.state, k) for la in model.layers for k in sorted(la.state)]
            if buffers:
                self._move(buffers, trainer.backend, self.comm.broadcast_)
        self.rank_sums = None
        self._gather_rngs(model)

    def checkpoint_meta(self) -> dict:
        """What a checkpoint of a K-rank run adds: ``world_size`` and every rank's streams."""
        if not self.active:
            return {}
        meta = {"world_size": self.size}
        if self.rank_rngs is not None:
            meta["rank_device_rngs"] = self.rank_rngs
        if self.rank_sums is not None:
            meta["rank_resume_sums"] = self.rank_sums
        return meta

    def check_resume(self, state, source) -> None:
        """Refuse a state saved by a run on another number of ranks (before anything changes)."""
        check_world_size(state.get("meta") if isinstance(state, dict) else None, self.size,
                         source)

    def restore(self, trainer, meta: dict) -> None:
        """After a state was loaded on every rank: this rank's dropout streams, then rank 0's
        parameters, optimizer state and shuffle generator everywhere."""
        if not self.active:
            return
        self._resume_sums = meta.get("rank_resume_sums")
        streams = meta.get("rank_device_rngs")
        if streams is not None:
            for layer in trainer.model.layers:
                state = streams[self.rank].get(layer.name)
                if state is not None and getattr(layer, "rng", None) is not None:
                    layer.rng.set_state(state)
        self.broadcast_state(trainer)


def _namespace(x):
    from array_api_compat import array_namespace

    return array_namespace(x)


def _device(x):
    from array_api_compat import device

    return device(x)
