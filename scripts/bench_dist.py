"""Data-parallel benchmark: ``mpiexec -n 2 python scripts/bench.py --distributed``.

The workload of scripts/bench.py (MNIST-shaped MLP 784-512-256-10, float32, SGD
with momentum 0.9 at a global batch of 128), or its classic CNN on (28, 28, 1)
images (``--model cnn --samples 1024``: Adam, scripts/bench_cnn.py), trained three
ways on the same cores:

1. K ranks of nnx data-parallel over MPI, one BLAS thread each;
2. one process with K BLAS threads (what the same cores do without MPI);
3. one process with one BLAS thread (the base of the scaling efficiency).

While rank 0 runs 2 and 3 the other ranks wait in a barrier that sleeps
between polls. Reported: seconds per epoch (median of the timed epochs), the
all-reduce time per step (the gradient all-reduce inside training, including
any wait for a slower rank, and the same all-reduce timed alone) against the
step time, the gradient bytes per step, and the scaling efficiency
``T(1 process, 1 thread) / (K * T(K ranks))``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]


def _workload(kind: str, n: int):
    """``(make_model, make_optimizer, x, y)``: the MLP configuration of scripts/bench.py
    (SGD with momentum 0.9, lr 0.05) or its CNN workload (scripts/bench_cnn.py, Adam)."""
    import nnx

    if kind == "mlp":
        from bench import make_data

        x, y = make_data(n)
        return (lambda: nnx.mlp([784, 512, 256, 10]),
                lambda: nnx.SGD(0.05, momentum=0.9), x, y)
    from bench_cnn import CLASSES, LR, SHAPE, make_images

    x, y = make_images(n)
    return lambda: nnx.cnn(SHAPE, CLASSES), lambda: nnx.Adam(LR), x, y


def _train(trainer, x, y, batch: int, epochs: int) -> list[float]:
    trainer.fit(x, y, epochs=epochs, batch_size=batch)
    return [float(t) for t in trainer.history["time"]]


def _alone(comm, backend, nbytes: int, reps: int = 30) -> float:
    """Seconds of one all-reduce of ``nbytes`` of float32 between the ranks, nothing else."""
    buf = np.ones(nbytes // 4, np.float32)
    comm.barrier()
    comm.allreduce_(buf, backend)
    start = time.perf_counter()
    for _ in range(reps):
        comm.allreduce_(buf, backend)
    return (time.perf_counter() - start) / reps


def main(argv) -> int:
    import argparse

    from threadpoolctl import threadpool_limits

    import nnx
    from nnx import backends
    from nnx.distributed import connect

    parser = argparse.ArgumentParser(prog="bench.py --distributed", description=__doc__)
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one untimed)")
    parser.add_argument("--batch", type=int, default=128, help="global batch (default 128)")
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--json", default=os.path.join("bench-results", "bench-distributed.json"))
    args = parser.parse_args(argv)
    comm = connect("mpi")
    k = comm.size
    if k < 2:
        print("error: run under mpiexec with two or more ranks: mpiexec -n 2 python "
              "scripts/bench.py --distributed", file=sys.stderr)
        return 2
    make_model, make_optimizer, x, y = _workload(args.model, args.samples)
    numpy = backends.get("numpy")

    def trainer(distributed):
        return nnx.Trainer(make_model(), "cross_entropy", make_optimizer(), device="cpu",
                           seed=0, distributed=distributed)

    with threadpool_limits(1):
        t = trainer(comm)
        _train(t, x[: 20 * args.batch], y[: 20 * args.batch], args.batch, 1)  # warm-up
        par = t.parallel
        par.reduce_seconds, par.reduce_count = 0.0, 0
        times = _train(t, x, y, args.batch, args.epochs)
        steps = par.reduce_count
        reduce_s = par.reduce_seconds / max(steps, 1)
        nbytes = par.gradient_bytes(t.model)
        alone = _alone(comm, numpy, nbytes)
        loss = t.history["loss"][-1]
    comm.barrier()
    if comm.rank != 0:
        comm.barrier()
        return 0
    single = {}
    for threads in (k, 1):
        with threadpool_limits(threads):
            s = trainer("off")
            _train(s, x[: 20 * args.batch], y[: 20 * args.batch], args.batch, 1)
            single[threads] = statistics.median(_train(s, x, y, args.batch, args.epochs))
    comm.barrier()
    epoch_k = statistics.median(times)
    step_s = epoch_k / (steps / args.epochs)
    result = {
        "command": f"mpiexec -n {k} python scripts/bench.py " + " ".join(sys.argv[1:]),
        "ranks": k, "engine": comm.describe(), "model": args.model, "samples": args.samples,
        "global_batch": args.batch, "timed_epochs": args.epochs, "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "gradient_bytes_per_step": nbytes,
        "s_per_epoch": {f"{k} ranks x 1 thread": epoch_k, f"1 process x {k} threads": single[k],
                        "1 process x 1 thread": single[1]},
        "step_s": step_s, "allreduce_in_step_s": reduce_s, "allreduce_alone_s": alone,
        "allreduce_share_of_step": reduce_s / step_s,
        "scaling_efficiency": single[1] / (k * epoch_k),
        "speedup_vs_threads": single[k] / epoch_k, "final_loss": loss,
    }
    _print(result, k)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"results written to {args.json}")
    return 0


def _print(r: dict, k: int) -> None:
    print(f"data-parallel benchmark: {r['model']} on {r['samples']} samples, global batch "
          f"{r['global_batch']}, {r['ranks']} ranks over {r['engine']}, {r['cpus']} CPUs, load "
          f"average {', '.join(f'{v:.1f}' for v in r['load_average'])}")
    for name, sec in r["s_per_epoch"].items():
        print(f"  {name:24s} {sec:8.3f} s per epoch")
    print(f"  step {1e3 * r['step_s']:.2f} ms; gradient all-reduce of "
          f"{r['gradient_bytes_per_step']:,} bytes: {1e3 * r['allreduce_in_step_s']:.2f} ms "
          f"per step inside training ({100 * r['allreduce_share_of_step']:.0f}% of the step, "
          f"waits included), {1e3 * r['allreduce_alone_s']:.2f} ms alone")
    print(f"  scaling efficiency {100 * r['scaling_efficiency']:.0f}% (1 thread alone / "
          f"({k} x {k} ranks)); {k} ranks vs {k} threads: {r['speedup_vs_threads']:.2f}x")
