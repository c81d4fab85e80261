"""Programs that tests/test_distributed.py starts under ``mpiexec -n K``.

``python tests/mpi_worker.py SCENARIO OUT [ARGS...]``: each scenario runs on
every rank; rank 0 writes its result as JSON (or ``.npz`` of parameters) to
OUT. Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nnx import backends  # noqa: E402
from nnx.distributed import connect  # noqa: E402
from nnx.errors import RankFailed  # noqa: E402


def collectives(out):
    """Every collective of the MPI communicator, on NumPy and torch arrays."""
    comm = connect("auto", "cpu", timeout=20)
    numpy = backends.get("numpy")
    x = np.full(5, comm.rank + 1.0, np.float32)
    same = comm.allreduce_(x, numpy) is x
    b = np.arange(4.0) if comm.rank == 0 else np.zeros(4)
    comm.broadcast_(b, numpy)
    result = {"size": comm.size, "rank_sum": x.tolist(), "in_place": same,
              "broadcast": b.tolist(), "describe": comm.describe(),
              "min": comm.allreduce_host([comm.rank + 3], "min").tolist(),
              "max": comm.allreduce_host([comm.rank + 3], "max").tolist(),
              "object": comm.bcast_object({"from": comm.rank}),
              "gathered": comm.allgather_object(("rank", comm.rank)),
              "members": comm.members("numpy")}
    try:
        torch = backends.get("torch")
    except backends.BackendUnavailable:
        torch = None
    if torch is not None:
        t = torch.asarray(np.arange(3.0) * (comm.rank + 1), "float32")
        result["torch_sum"] = torch.to_numpy(comm.allreduce_(t, torch)).tolist()
    comm.barrier()
    _write(comm, out, result)


def fault(out, mode, timeout="3"):
    """Rank 1 raises, stops itself (SIGSTOP) or is killed (SIGKILL) between collectives."""
    comm = connect("auto", "cpu", timeout=float(timeout))
    numpy = backends.get("numpy")
    x = np.ones(8)
    comm.allreduce_(x, numpy)
    pids = [m["pid"] for m in comm.members("numpy")]
    _write(comm, out + ".pids", {"pids": pids})
    comm.barrier()  # the file is there before rank 1 fails
    start = time.monotonic()
    try:
        if comm.rank == 1:
            if mode == "raise":
                raise ValueError("rank 1 fails on purpose")
            os.kill(os.getpid(), signal.SIGSTOP if mode == "stop" else signal.SIGKILL)
        for _ in range(5):
            comm.allreduce_(x, numpy)
    except RankFailed as exc:
        comm.notify_failure(exc)
        _write(comm, out, {"error": str(exc), "rank": exc.rank, "after": time.monotonic() - start},
               force=True)
        sys.exit(2)
    except ValueError as exc:
        comm.notify_failure(exc)
        sys.stdout.write(f"rank {comm.rank}: root heard {comm.wait_for_root()}\n")
        sys.exit(2)


# --- training -------------------------------------------------------------------

#: the small problem every equality test trains: 203 examples make an uneven last batch
N, FEATURES, CLASSES, BATCH, EPOCHS = 203, 10, 3, 32, 4


def problem(seed=0):
    """A small classification set: ``(x, y)`` host arrays."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, FEATURES))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


def small_model(dropout=0.0, batchnorm=False):
    import nnx

    return nnx.mlp([FEATURES, 16, 16, CLASSES], dropout=dropout, batchnorm=batchnorm)


def optimizer(name):
    import nnx

    return nnx.SGD(0.1, momentum=0.9) if name == "sgdm" else nnx.Adam(0.01)


def case_name(opt, dtype, dropout, batchnorm=False, device="cpu", sync=True):
    return f"{opt}-{dtype}-d{dropout}" + ("-bn" if batchnorm else "") + (
        "-local" if not sync else "") + (f"-{device}" if device != "cpu" else "")


def parse_case(case: str) -> dict:
    """``opt:dtype:dropout[:bn[:local]][:torch]`` as keyword arguments of :func:`case_name`
    (``bn``: BatchNorm, synchronised unless ``local``)."""
    opt, dtype, dropout, *flags = case.split(":")
    return {"opt": opt, "dtype": dtype, "dropout": dropout, "batchnorm": "bn" in flags,
            "device": "torch" if "torch" in flags else "cpu", "sync": "local" not in flags}


def train_cases(out, *cases):
    """Train each case (see :func:`parse_case`) data-parallel; rank 0 saves the weights
    and logs of every case to OUT (``.npz``), and whether every rank ended with the same
    weights."""
    import nnx

    comm = connect("auto", "cpu", timeout=60)
    x, y = problem()
    xv, yv = problem(1)
    saved = {}
    for case in cases:
        c = parse_case(case)
        trainer = nnx.Trainer(small_model(float(c["dropout"]), c["batchnorm"]), "cross_entropy",
                              optimizer(c["opt"]), seed=0, dtype=c["dtype"], device=c["device"],
                              distributed=comm, sync_batchnorm=c["batchnorm"] and c["sync"])
        trainer.fit(x, y, epochs=EPOCHS, batch_size=BATCH, validation_data=(xv, yv))
        name = case_name(**c)
        weights = trainer.model.get_weights()
        for k, v in weights.items():
            saved[f"{name}/{k}"] = v
        sums = comm.allgather_object({k: v.tobytes() for k, v in weights.items()})
        saved[f"{name}/same_on_every_rank"] = np.asarray(all(s == sums[0] for s in sums))
        for k, v in trainer.history.history.items():
            saved[f"{name}/log/{k}"] = np.asarray(v, dtype=np.float64)
    if comm.rank == 0:
        np.savez(out, **saved)


def controls(out):
    """Three planted mistakes the equality test must catch (rank 0 saves the weights):
    a missing broadcast (rank 1 keeps other initial weights), a mean of per-rank means
    and a sum of per-rank means without the average."""
    import nnx
    from nnx.distributed.parallel import DataParallel

    class MeanOfMeans(DataParallel):
        def loss_weight(self, mine, m):
            return 1.0 / self.size

    class NoAverage(DataParallel):
        def loss_weight(self, mine, m):
            return 1.0

    comm = connect("auto", "cpu", timeout=60)
    x, y = problem()
    saved = {}
    for name in ("seeded_per_rank", "no_broadcast", "mean_of_means", "no_average"):
        seed = comm.rank if name in ("seeded_per_rank", "no_broadcast") else 0
        trainer = nnx.Trainer(small_model(), "cross_entropy", optimizer("sgdm"), seed=seed,
                              dtype="float64", distributed=comm)
        if name == "no_broadcast":  # what rank 1 would train from without the broadcast
            trainer.model.set_weights(small_model().init("cpu", seed, "float64").get_weights())
        elif name != "seeded_per_rank":
            trainer.parallel.__class__ = MeanOfMeans if name == "mean_of_means" else NoAverage
        trainer.fit(x, y, epochs=EPOCHS, batch_size=BATCH)
        saved.update({f"{name}/{k}": v for k, v in trainer.model.get_weights().items()})
    if comm.rank == 0:
        np.savez(out, **saved)


def resume(out, ckpt):
    """An uninterrupted run against one that rank 1 alone interrupts inside epoch 2, is
    checkpointed by rank 0 and resumed by fresh trainers (dropout, Adam, float32)."""
    import nnx

    comm = connect("auto", "cpu", timeout=60)
    x, y = problem()

    class InterruptOnRank1(nnx.callbacks.Callback):
        def on_step_end(self, trainer, state):
            if comm.rank == 1 and state.step == 9:
                trainer.request_interrupt()

    def trainer():
        return nnx.Trainer(small_model(0.2), "cross_entropy", optimizer("adam"), seed=0,
                           distributed=comm)

    straight = trainer()
    straight.fit(x, y, epochs=EPOCHS, batch_size=BATCH)
    first = trainer()
    first.fit(x, y, epochs=EPOCHS, batch_size=BATCH, callbacks=[InterruptOnRank1()])
    stopped = comm.allgather_object([first.step, first.interrupted_at["batch"]])
    if comm.rank == 0:
        nnx.save_checkpoint(ckpt, first)
    comm.barrier()
    second = trainer()
    second.fit(x, y, epochs=EPOCHS, batch_size=BATCH, resume=ckpt)
    a, b = straight.model.get_weights(), second.model.get_weights()
    result = {"stopped": stopped, "bitwise": all(np.array_equal(a[k], b[k]) for k in a),
              "max_diff": max(float(np.max(np.abs(a[k] - b[k]))) for k in a),
              "logs_equal": straight.history.history["loss"] == second.history.history["loss"]}
    _write(comm, out, result)


def resume_other_count(out, ckpt):
    """Resume a checkpoint with another number of ranks: the error on rank 0."""
    import nnx

    comm = connect("auto", "cpu", timeout=60)
    x, y = problem()
    t = nnx.Trainer(small_model(0.2), "cross_entropy", optimizer("adam"), seed=0,
                    distributed=comm)
    try:
        t.fit(x, y, epochs=EPOCHS, batch_size=BATCH, resume=ckpt)
    except nnx.CheckpointError as exc:
        _write(comm, out, {"error": str(exc)})


def train_fault(out, ckpt, mode):
    """Rank 1 raises (``raise``) or is killed (``kill``) at step 16, inside epoch 3, while
    rank 0 writes a checkpoint after every epoch."""
    import nnx

    comm = connect("auto", "cpu", timeout=60)
    x, y = problem()

    class Fault(nnx.callbacks.Callback):
        def on_step_end(self, trainer, state):
            if comm.rank == 1 and state.step == 16:
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError("a fault planted at step 16")

    t = nnx.Trainer(small_model(), "cross_entropy", optimizer("sgdm"), seed=0,
                    distributed=comm)
    start = time.monotonic()
    try:
        t.fit(x, y, epochs=EPOCHS, batch_size=BATCH,
              callbacks=[nnx.callbacks.ModelCheckpoint(ckpt, monitor="loss"), Fault()])
    except RankFailed as exc:
        _write(comm, out, {"error": str(exc), "rank": exc.rank, "step": t.step,
                           "after": time.monotonic() - start})
        raise


def gpu_engine(out):
    """NCCL between the ranks' GPUs: the errors without CuPy, NCCL or enough GPUs, or an
    all-reduce and a broadcast of CuPy arrays."""
    from nnx.distributed import device_for_rank

    result = {}
    try:
        comm = connect("nccl", "cuda", timeout=60)
        device = device_for_rank("cuda", comm)
        backend = backends.get(device)
        x = backend.asarray(np.full(6, comm.rank + 1.0), "float32")
        total = backend.to_numpy(comm.allreduce_(x, backend)).tolist()
        b = backend.asarray(np.arange(3.0) * (comm.rank == 0), "float64")
        result = {"device": device, "sum": total, "describe": comm.describe(),
                  "broadcast": backend.to_numpy(comm.broadcast_(b, backend)).tolist()}
    except (backends.BackendUnavailable, Exception) as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    if int(os.environ.get("PMI_RANK", "0")) == 0:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)


def _write(comm, out, result, force=False):
    if comm.rank == 0 or force:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
