#!/usr/bin/env python3
"""Benchmark nnx against PyTorch and a course-style NumPy loop on an MNIST-shaped MLP.

    python scripts/bench.py            # full run (60,000 samples, 3 repeats)
    python scripts/bench.py --quick    # about two minutes
    python scripts/bench.py --device cuda   # nnx on CuPy and PyTorch CUDA

Workload (float32): 784-512-256-10 ReLU MLP, softmax cross-entropy, on
synthetic MNIST-like data (mostly-zero images in [0, 1], 10 classes from a
fixed random teacher). SGD with momentum 0.9 at batch 128, 512 and full batch,
and Adam at batch 128 and 512. Every implementation is timed in the same run,
interleaved, median of the repeats, after an untimed warm-up, and must learn
(loss below its start, accuracy well above chance) for its time to count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

# Idle OpenMP threads of PyTorch would otherwise spin on the cores NumPy's BLAS
# needs next: interleaved timings on a small machine would measure that fight.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_impls import SIZES, CourseImpl, NnxImpl, TorchImpl, step_matmuls  # noqa: E402

CONFIGS = [("sgdm", 128, 0.05), ("sgdm", 512, 0.1), ("sgdm", "full", 0.5), ("adam", 128, 1e-3),
           ("adam", 512, 2e-3)]


def make_data(n: int, seed: int = 0):
    """MNIST-shaped data: ~19% of pixels lit (like digit images), labels from a fixed
    random teacher MLP (the same teacher for every ``seed``)."""
    teacher = np.random.default_rng(12345)
    w1 = teacher.standard_normal((784, 64)).astype(np.float32) / np.sqrt(784 * 0.19 / 3)
    w2 = teacher.standard_normal((64, 10)).astype(np.float32)
    rng = np.random.default_rng(seed)
    lit = rng.random((n, 784)) < 0.19
    x = (rng.random((n, 784)) * lit).astype(np.float32)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int64)
    return x, y


def blas_info() -> list[dict]:
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "pip install threadpoolctl to see the BLAS in use"}]
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "filepath")
    return [{k: i.get(k) for k in keys} for i in threadpoolctl.threadpool_info()]


def matmul_seconds(shapes, lib: str, dtype, repeats: int = 10) -> dict:
    """Seconds per call of each (m, k, n) matmul, measured now with ``lib`` (best of 5)."""
    out = {}
    for m, k, n in set(shapes):
        if lib == "torch":
            import torch

            a = torch.rand(m, k, dtype=getattr(torch, dtype))
            b = torch.rand(k, n, dtype=getattr(torch, dtype))
            mm = torch.matmul
        else:
            a = np.random.rand(m, k).astype(dtype)
            b = np.random.rand(k, n).astype(dtype)
            mm = np.matmul
        for _ in range(3):
            mm(a, b)
        rounds = []
        for _ in range(5):  # the best round: the rate this machine can reach
            t0 = time.perf_counter()
            for _ in range(repeats):
                mm(a, b)
            rounds.append((time.perf_counter() - t0) / repeats)
        out[(m, k, n)] = min(rounds)
    return out


def gemm_floor(impl, n: int, batch: int, lib: str, dtype: str) -> tuple[float, float]:
    """(floor seconds, GFLOP) of one epoch's matmuls for ``impl`` at measured rates."""
    full, rest = divmod(n, batch)
    batches = [batch] * full + ([rest] if rest else [])
    shapes = {b: step_matmuls(b, impl.input_grad) for b in set(batches)}
    per = matmul_seconds([s for v in shapes.values() for s in v], lib, dtype,
                         repeats=2 if batch >= 4096 else 10)
    floor = sum(per[s] for b in batches for s in shapes[b])
    flops = sum(2 * m * k * q for b in batches for (m, k, q) in shapes[b])
    return floor, flops / 1e9


def implementations(device: str, opt: str, batch, lr: float, have_torch: bool):
    if device == "cuda":
        impls = [NnxImpl("cuda", opt, batch, lr)]
        if have_torch:
            impls += [NnxImpl("torch:cuda", opt, batch, lr), TorchImpl("cuda", opt, batch, lr)]
        return impls
    impls = [NnxImpl("numpy", opt, batch, lr)]
    if opt == "sgdm" and batch == 128:
        impls.append(NnxImpl("numpy", opt, batch, lr, doctor=True))
    if have_torch:
        impls += [NnxImpl("torch", opt, batch, lr), TorchImpl("cpu", opt, batch, lr)]
    impls.append(CourseImpl(opt, batch, lr))
    return impls


def ops_and_syncs(batch: int, opt: str) -> dict:
    """Array operations and host syncs of one nnx step and one epoch (strict backend)."""
    try:
        import backends
        from backends.counting import count
    except ImportError:
        return {}
    try:
        strict = backends.get("strict")
    except backends.BackendUnavailable:
        return {}
    import nnx

    x, y = make_data(4 * batch, seed=1)
    optimizer = nnx.SGD(0.05, momentum=0.9) if opt == "sgdm" else nnx.Adam(1e-3)
    trainer = nnx.Trainer(nnx.mlp(list(SIZES)), "cross_entropy", optimizer, device=strict)
    steps = {}

    class Probe(nnx.callbacks.Callback):
        def on_step_end(self, tr, state):
            steps[state.step] = (counter.ops, counter.syncs)

    trainer.fit(x, y, epochs=1, batch_size=batch)  # warm
    with count(strict) as counter:
        trainer.fit(x, y, epochs=1, batch_size=batch, callbacks=[Probe()])
    marks = sorted(steps.items())
    per_step_ops = marks[2][1][0] - marks[1][1][0]
    per_step_syncs = marks[2][1][1] - marks[1][1][1]
    return {"ops_per_step": per_step_ops, "syncs_per_step": per_step_syncs,
            "syncs_per_epoch": counter.syncs, "steps_per_epoch": len(marks)}


def memory_check(x, y, epochs: int = 5) -> dict:
    """Peak RSS (MiB) after each epoch of nnx on NumPy, batch 128."""
    import nnx

    peaks = []

    class Rss(nnx.callbacks.Callback):
        def on_epoch_end(self, tr, epoch, logs):
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    trainer = nnx.Trainer(nnx.mlp(list(SIZES)), "cross_entropy", nnx.SGD(0.05, momentum=0.9),
                          device="numpy", callbacks=[Rss()])
    trainer.fit(x, y, epochs=epochs, batch_size=128)
    growth = peaks[4] / peaks[1] - 1 if len(peaks) >= 5 else None
    return {"peak_rss_mib": [round(p, 1) for p in peaks], "epoch5_vs_epoch2": growth}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu: nnx on NumPy and torch, PyTorch, NumPy loop; cuda: nnx on "
                        "CuPy and torch:cuda, PyTorch CUDA (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="12,000 samples, 2 repeats")
    parser.add_argument("--samples", type=int, default=None, help="training samples "
                        "(default 60000, or 12000 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per "
                        "implementation (default 3, or 2 with --quick)")
    parser.add_argument("--json", default=os.path.join("bench-results", "bench.json"),
                        help="where to write the results (default bench-results/bench.json)")
    args = parser.parse_args(argv)
    n = args.samples or (12000 if args.quick else 60000)
    repeats = args.repeats or (2 if args.quick else 3)
    try:
        import torch

        have_torch = True
        torch_info = {"version": torch.__version__, "threads": torch.get_num_threads(),
                      "blas": "MKL" if torch.backends.mkl.is_available() else "other"}
    except ImportError:
        have_torch, torch_info = False, None
    if args.device == "cuda":
        import backends

        print(f"GPU: {backends.get('cuda').describe()}")
    x, y = make_data(n)
    xv, yv = make_data(5000, seed=99)
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                          "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "torch": torch_info, "env": env,
                          "blas": blas_info()},
              "workload": {"samples": n, "sizes": SIZES, "repeats": repeats}, "runs": []}
    print(f"nnx benchmark: MLP {'-'.join(map(str, SIZES))}, {n} samples, float32, "
          f"median of {repeats} epochs, {os.cpu_count()} CPUs")
    for b in result["machine"]["blas"]:
        print(f"  BLAS: {b.get('internal_api')} {b.get('version') or ''} "
              f"kernel={b.get('architecture')} threads={b.get('num_threads')} "
              f"({os.path.basename(str(b.get('filepath')))})")
    if env["OPENBLAS_CORETYPE"]:
        print(f"  note: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} is set in the environment "
              "and forces that OpenBLAS kernel for NumPy")
    for opt, batch, lr in CONFIGS:
        bs = n if batch == "full" else batch
        impls = implementations(args.device, opt, bs, lr, have_torch)
        floors = {}
        if args.device == "cpu":  # matmul rates first, with nothing else running
            for impl in impls:
                lib = "torch" if "torch" in impl.name else "numpy"
                dtype = "float64" if isinstance(impl, CourseImpl) else "float32"
                floors[impl.name] = gemm_floor(impl, n, bs, lib, dtype)
        for impl in impls:
            impl.setup(x, y)
            impl.start = impl.evaluate(xv, yv)
            impl.warmup(10 if batch == "full" else 20)
        times = {impl.name: [] for impl in impls}
        for _ in range(repeats):  # interleaved: every implementation once per round
            for impl in impls:
                times[impl.name].append(impl.epoch())
        torch_median = None
        rows = []
        for impl in impls:
            med = statistics.median(times[impl.name])
            loss, acc = impl.evaluate(xv, yv)
            learned = loss < impl.start[0] - 0.05 and acc > 0.25
            floor, gflop = floors.get(impl.name, (None, None))
            row = {"config": f"{opt} b{batch}", "impl": impl.name, "s_per_epoch": med,
                   "samples_per_s": n / med, "loss": loss, "accuracy": acc,
                   "learned": bool(learned), "times": times[impl.name],
                   "gemm_floor_s": floor, "gemm_fraction": floor / med if floor else None,
                   "gflop_per_epoch": gflop}
            if isinstance(impl, TorchImpl):
                torch_median = med
                if batch != "full":
                    row["torch_ops_per_step"] = impl.ops_per_step()
            rows.append(row)
        for row in rows:
            row["vs_pytorch"] = row["s_per_epoch"] / torch_median if torch_median else None
        if args.device == "cpu" and batch != "full":
            counts = ops_and_syncs(bs, opt)
            rows[0].update(counts)
        result["runs"] += rows
        _print_rows(rows)
        doctor = [r for r in rows if r["impl"].endswith("doctor")]
        if doctor:
            base = rows[0]["s_per_epoch"]
            overhead = 100 * (doctor[0]["s_per_epoch"] / base - 1)
            print(f"    doctor monitor overhead: {overhead:+.1f}% of epoch time")
    if args.device == "cpu":
        result["memory"] = memory_check(x[: min(n, 12000)], y[: min(n, 12000)])
        g = result["memory"]["epoch5_vs_epoch2"]
        print(f"memory: peak RSS per epoch {result['memory']['peak_rss_mib']} MiB; epoch 5 vs "
              f"epoch 2: {100 * g:+.1f}%" if g is not None else "memory: n/a")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"results written to {args.json}")
    bad = [r for r in result["runs"] if not r["learned"]]
    for r in bad:
        print(f"warning: {r['impl']} ({r['config']}) did not learn: loss {r['loss']:.3f}, "
              f"accuracy {r['accuracy']:.3f}; its time does not count")
    return 0


def _print_rows(rows) -> None:
    head = (f"\n{rows[0]['config']:<12} {'implementation':<24} {'s/epoch':>8} {'samples/s':>10} "
            f"{'vs torch':>8} {'GEMM floor':>10} {'ops/step':>8} {'syncs/step':>10} "
            f"{'val acc':>7} learned")
    print(head)
    for r in rows:
        vs = f"{r['vs_pytorch']:.2f}x" if r.get("vs_pytorch") else "-"
        floor = f"{100 * r['gemm_fraction']:.0f}%" if r.get("gemm_fraction") else "-"
        ops = r.get("ops_per_step", r.get("torch_ops_per_step"))
        syncs = r.get("syncs_per_step")
        print(f"{'':<12} {r['impl']:<24} {r['s_per_epoch']:>8.3f} {r['samples_per_s']:>10,.0f} "
              f"{vs:>8} {floor:>10} {ops if ops is not None else '-':>8} "
              f"{syncs if syncs is not None else '-':>10} {r['accuracy']:>7.3f} "
              f"{'yes' if r['learned'] else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
