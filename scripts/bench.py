#!/usr/bin/env python3
"""Benchmark nnx against PyTorch and a course-style NumPy loop on an MNIST-shaped MLP.

    python scripts/bench.py                 # 60,000 samples, median of 5 epochs (about 7 minutes),
                                            # then the doctor's cost (about 3 minutes)
    python scripts/bench.py --quick         # 12,000 samples, 2 epochs, under three minutes
    python scripts/bench.py --workload doctor   # the doctor's cost alone
    python scripts/bench.py --device cuda   # nnx on CuPy and torch:cuda, PyTorch CUDA
    python scripts/bench.py --native-blas   # let OpenBLAS pick its kernel (see below)
    python scripts/bench.py --workload cnn  # the classic CNN on (n, 28, 28, 1) images
    mpiexec -n 2 python scripts/bench.py --distributed   # data-parallel (bench_dist.py)

Workload (float32): 784-512-256-10 ReLU MLP, softmax cross-entropy, on
synthetic MNIST-like data (81% zero pixels, the rest in [0, 1]; 10 classes from
a fixed random teacher). SGD with momentum 0.9 at batch 128, 512 and full
batch; Adam at batch 128 and 512. Every implementation is timed in the same
run, interleaved (the order rotates each round, after a pause that lets the
previous library's idle threads sleep), and reported as the median of the
repeats, after an untimed warm-up. Its time counts only if it learned: the
validation loss fell and the accuracy beats always guessing the most common
class by 10 points.

The GEMM floor is an epoch's matmuls (forward and backward, as many as the
implementation must do) timed alone at the best rate measured in this run for
the same shapes; ``GEMM floor`` in the table is floor / epoch time. nnx and
PyTorch skip the input layer's dx; the course-style loop computes it.

``--workload cnn`` (or ``all``) times the classic small CNN instead (or as well):
10,000 images (2,048 with --quick) of shape (28, 28, 1), batch 128, Adam, for
nnx on NumPy, nnx on torch and PyTorch eager; see scripts/bench_cnn.py.

The doctor's cost (with ``--workload mlp``, the default, ``all`` or ``doctor``, on
the CPU): whole training runs with and without it, interleaved, on the digits
default (the run ``python scripts/train.py`` makes) and on the MNIST-shaped MLP
(SGD with momentum, batch 128, a fit of 3 epochs); see scripts/bench_doctor.py.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment force an OpenBLAS
kernel on NumPy; the table names the kernel measured. ``--native-blas`` reruns
the benchmark with both unset (only for that run).
"""

from __future__ import annotations

import os
import sys

_FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if "--native-blas" in sys.argv[1:] and any(k in os.environ for k in _FORCED):
    # must happen before NumPy loads OpenBLAS: start again without the two variables
    env = {k: v for k, v in os.environ.items() if k not in _FORCED}
    env["NNX_BENCH_UNSET"] = ",".join(f"{k}={os.environ[k]}" for k in _FORCED
                                      if k in os.environ)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

if __name__ == "__main__" and "--distributed" in sys.argv[1:]:
    # mpiexec -n K python scripts/bench.py --distributed: data-parallel (scripts/bench_dist.py)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_dist import main as _distributed

    sys.exit(_distributed(sys.argv[1:]))

# Idle OpenMP threads of PyTorch would otherwise spin on the cores NumPy's BLAS
# needs next: interleaved timings on a small machine would measure that fight.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from bench_cnn import run_cnn  # noqa: E402
from bench_doctor import run_doctor  # noqa: E402
from bench_impls import SIZES, CourseImpl, NnxImpl, TorchImpl, step_matmuls  # noqa: E402
from bench_report import goals, print_rows, summarise  # noqa: E402
from bench_sys import CpuMeter, matmul_seconds, memory_per_epoch, nnx_counts  # noqa: E402

#: (optimizer, batch, learning rate)
CONFIGS = [("sgdm", 128, 0.05), ("sgdm", 512, 0.1), ("sgdm", "full", 0.3), ("adam", 128, 1e-3),
           ("adam", 512, 2e-3)]
PAUSE_S = 0.3  # OpenBLAS workers spin for about 0.1 s after a product before they sleep


def make_data(n: int, seed: int = 0):
    """MNIST-shaped data: ~19% of pixels lit (like digit images), labels from a fixed
    random teacher MLP (the same teacher for every ``seed``), centred so that the
    ten classes are about equally common."""
    teacher = np.random.default_rng(12345)
    w1 = teacher.standard_normal((784, 64)).astype(np.float32) / np.sqrt(784 * 0.19 / 3)
    w2 = teacher.standard_normal((64, 10)).astype(np.float32)
    ref = teacher.random((2000, 784)) * (teacher.random((2000, 784)) < 0.19)
    centre = np.median(np.tanh(ref.astype(np.float32) @ w1) @ w2, axis=0)
    rng = np.random.default_rng(seed)
    lit = rng.random((n, 784)) < 0.19
    x = (rng.random((n, 784)) * lit).astype(np.float32)
    y = np.argmax(np.tanh(x @ w1) @ w2 - centre, axis=1).astype(np.int64)
    return x, y


def epoch_matmuls(impl, n: int, batch: int) -> list[tuple[int, int, int]]:
    """Every (m, k, n) product of one epoch of ``impl`` (the last batch may be smaller)."""
    full, rest = divmod(n, batch)
    return [s for b in [batch] * full + ([rest] if rest else [])
            for s in step_matmuls(b, impl.input_grad)]


def measure_rates(impls, n: int, batch: int, rates: dict) -> None:
    """Time every product the epochs need, per library; keep the best time seen so far."""
    wanted = {}
    for impl in impls:
        backend, dtype = _floor_backend(impl)
        wanted.setdefault((backend, dtype), set()).update(epoch_matmuls(impl, n, batch))
    for (backend, dtype), shapes in wanted.items():
        got = matmul_seconds(shapes, backend, dtype)
        for shape, sec in got.items():
            key = (backend.label, dtype, shape)
            rates[key] = min(sec, rates.get(key, sec))


def gemm_floor(impl, n: int, batch: int, rates: dict) -> tuple[float, float]:
    """(seconds, GFLOP) of one epoch's matmuls for ``impl`` at the best measured rates."""
    backend, dtype = _floor_backend(impl)
    shapes = epoch_matmuls(impl, n, batch)
    floor = sum(rates[(backend.label, dtype, s)] for s in shapes)
    return floor, sum(2 * m * k * q for (m, k, q) in shapes) / 1e9


def implementations(device: str, opt: str, batch, lr: float, have_torch: bool):
    nnx_dev, torch_dev = ("cuda", "torch:cuda") if device == "cuda" else ("numpy", "torch")
    impls = [NnxImpl(nnx_dev, opt, batch, lr)]
    if have_torch:
        impls += [NnxImpl(torch_dev, opt, batch, lr),
                  TorchImpl("cuda" if device == "cuda" else "cpu", opt, batch, lr)]
    if device != "cuda":
        impls.append(CourseImpl(opt, batch, lr))
    return impls


def _floor_backend(impl):
    from nnx import backends

    if isinstance(impl, CourseImpl):
        return backends.get("numpy"), "float64"
    if isinstance(impl, TorchImpl):
        return backends.get("torch" if impl.device == "cpu" else "torch:cuda"), "float32"
    return backends.get(impl.device), "float32"


def _prepare(impls, x, y, xv, yv, batch) -> None:
    """Set every implementation up on ``(x, y)``, note its starting validation loss and
    accuracy (``impl.start``) and warm it up."""
    for impl in impls:
        impl.setup(x, y)
        impl.start = impl.evaluate(xv, yv)
        impl.warmup(15 if batch == "full" else 20)  # steps (full batch: one per epoch)


def _timed_epochs(impls, repeats: int) -> tuple[dict, dict]:
    """``repeats`` timed epochs of every implementation, interleaved, the order rotating
    every round; returns the seconds and the other processes' CPU share of each epoch,
    by implementation name."""
    times = {impl.name: [] for impl in impls}
    others = {impl.name: [] for impl in impls}
    meter = CpuMeter()
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
            time.sleep(PAUSE_S)
            meter.start()
            times[impl.name].append(impl.epoch())
            others[impl.name].append(meter.stop())
    return times, others


def _outcome(impl, opt, batch, xv, yv, counts) -> dict:
    """The row's configuration, final validation loss and accuracy, whether ``impl``
    learned (loss down by 0.05, accuracy 0.1 above the majority class) and its counts."""
    loss, acc = impl.evaluate(xv, yv)
    majority = np.bincount(yv).max() / yv.shape[0]
    row = dict(config=f"{opt} b{batch}", optimizer=opt, batch=batch, loss=loss,
               accuracy=acc, start_loss=impl.start[0],
               learned=bool(loss < impl.start[0] - 0.05 and acc > majority + 0.1))
    if isinstance(impl, NnxImpl):
        row.update(counts.get((impl.device, opt), {}))
    if isinstance(impl, TorchImpl) and batch != "full":
        row["torch_ops_per_step"] = impl.ops_per_step()
    return row


def run_config(opt, batch, lr, args, data, have_torch, counts) -> list[dict]:
    (x, y), (xv, yv) = data
    n = x.shape[0]
    bs = n if batch == "full" else batch
    impls = implementations(args.device, opt, bs, lr, have_torch)
    rates = {}
    measure_rates(impls, n, bs, rates)  # matmul rates alone, before and after the epochs
    _prepare(impls, x, y, xv, yv, batch)
    times, others = _timed_epochs(impls, args.repeats)
    measure_rates(impls, n, bs, rates)
    rows = []
    for impl in impls:
        outcome = _outcome(impl, opt, batch, xv, yv, counts)
        floor, gflop = gemm_floor(impl, n, bs, rates)
        row = summarise(impl, times[impl.name], others[impl.name], n, floor, gflop)
        row.update(outcome)
        rows.append(row)
    ref = next((r["s_per_epoch"] for r in rows if r["impl"].startswith("pytorch")), None)
    for row in rows:
        row["vs_pytorch"] = row["s_per_epoch"] / ref if ref else None
    return rows


def machine(args, have_torch) -> dict:
    import bench_sys

    env = {k: os.environ.get(k) for k in (*_FORCED, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "OMP_WAIT_POLICY")}
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "env": env, "unset_for_this_run":
            os.environ.get("NNX_BENCH_UNSET"), "blas": bench_sys.blas_info(),
            "threads": bench_sys.thread_info(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu: nnx on NumPy and torch, PyTorch, NumPy loop; cuda: nnx on "
                        "CuPy and torch:cuda, PyTorch CUDA (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="12,000 samples, 2 repeats")
    parser.add_argument("--samples", type=int, default=None, help="training samples "
                        "(default 60000, or 12000 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per "
                        "implementation (default 5, or 2 with --quick)")
    parser.add_argument("--native-blas", action="store_true", help="unset OPENBLAS_CORETYPE "
                        "and OPENBLAS_L2_SIZE for this run, so OpenBLAS picks its own kernel")
    parser.add_argument("--workload", default="mlp", choices=["mlp", "cnn", "doctor", "all"],
                        help="mlp: the MLP configurations and the doctor's cost; cnn: the "
                        "classic CNN on MNIST-shaped images (batch 128, Adam); doctor: the "
                        "doctor's cost alone; all: everything (default: mlp)")
    parser.add_argument("--cnn-samples", type=int, default=None, help="training images of "
                        "the CNN workload (default 10000, or 2048 with --quick)")
    parser.add_argument("--doctor-pairs", default=None, type=_pairs, metavar="D[,M]",
                        help="pairs of "
                        "runs with and without the doctor: D of the digits default, M (or D) "
                        "of the MNIST-shaped fit, 0 to skip one (default 15,5, or 8,3 with "
                        "--quick)")
    parser.add_argument("--json", default=os.path.join("bench-results", "bench.json"),
                        help="where to write the results (default bench-results/bench.json)")
    args = parser.parse_args(argv)
    args.samples = args.samples or (12000 if args.quick else 60000)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.cnn_samples = args.cnn_samples or (2048 if args.quick else 10000)
    from nnx import backends

    if args.device == "cuda":
        try:
            print(f"GPU: {backends.get('cuda').describe()}")
        except backends.BackendUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    start = time.perf_counter()
    result = {"machine": machine(args, have_torch), "runs": [], "wall_s": {},
              "workload": {"samples": args.samples, "sizes": SIZES, "repeats": args.repeats,
                           "device": args.device, "name": args.workload,
                           "cnn_samples": args.cnn_samples}}
    what = {"mlp": f"MLP {'-'.join(map(str, SIZES))}, {args.samples} samples",
            "cnn": f"classic CNN, {args.cnn_samples} images (28, 28, 1)",
            "doctor": "the doctor's cost"}
    _print_machine(result["machine"], "; ".join(
        v for k, v in what.items() if args.workload in (k, "all")), args.repeats)
    run_workloads(args, have_torch, result)
    result["goals"] = goals(result)
    result["wall_s"]["total"] = round(time.perf_counter() - start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"results written to {args.json} ({result['wall_s']['total']:.0f} s in all)")
    return 0


def run_workloads(args, have_torch: bool, result: dict) -> None:
    """The workloads ``--workload`` names (the doctor's cost with mlp), into ``result``."""
    data = None
    if args.workload != "cnn":
        data = make_data(args.samples), make_data(5000, seed=99)
    if args.workload in ("mlp", "all"):
        run_mlp(args, have_torch, result, data)
    if args.workload in ("mlp", "doctor", "all"):
        t0 = time.perf_counter()
        if args.device == "cpu":
            result["doctor"] = run_doctor(args, data, PAUSE_S)
        else:
            print("\ndoctor cost: measured on the CPU only (run without --device cuda)")
        result["wall_s"]["doctor"] = round(time.perf_counter() - t0, 1)
    if args.workload in ("cnn", "all"):
        t0 = time.perf_counter()
        rows, result["memory_cnn"] = run_cnn(args, have_torch, PAUSE_S)
        result["wall_s"]["cnn"] = round(time.perf_counter() - t0, 1)
        result["runs"] += rows


def run_mlp(args, have_torch: bool, result: dict, data) -> None:
    """The MLP configurations and nnx's memory per epoch on ``data`` (training and
    validation ``(x, y)``), into ``result``."""
    n = args.samples
    counts = {}
    devices = ["cuda"] if args.device == "cuda" else ["numpy"]
    devices += (["torch:cuda"] if args.device == "cuda" else ["torch"]) if have_torch else []
    for dev in devices:
        for opt in ("sgdm", "adam"):
            counts[(dev, opt)] = nnx_counts(dev, SIZES, opt)
    for opt, batch, lr in CONFIGS:
        t0 = time.perf_counter()
        rows = run_config(opt, batch, lr, args, data, have_torch, counts)
        result["wall_s"][f"{opt} b{batch}"] = round(time.perf_counter() - t0, 1)
        result["runs"] += rows
        print_rows(rows)
    if args.device == "cpu":
        m = min(n, 30000)
        result["memory"] = mem = memory_per_epoch(data[0][0][:m], data[0][1][:m], SIZES)
        g = mem["epoch5_vs_epoch2"]
        print(f"\nmemory (nnx numpy, batch 128, {m} samples): peak RSS per epoch "
              f"{mem['peak_rss_mib']} MiB{'' if mem['per_epoch'] else ' (process peak)'}; "
              f"epoch 5 vs epoch 2: {100 * g:+.1f}%")


def _pairs(text: str) -> tuple[int, int]:
    """``--doctor-pairs D[,M]``: (D, M), M = D when only one is given."""
    try:
        given = [int(v) for v in text.split(",")]
    except ValueError:
        given = []
    if not 1 <= len(given) <= 2 or min(given) < 0 or max(given) < 1:
        raise argparse.ArgumentTypeError(f"want one or two counts, e.g. 40,12 (0: skip that "
                                         f"run); got {text!r}")
    return given[0], given[-1]


def _print_machine(m: dict, workload: str, repeats: int) -> None:
    print(f"nnx benchmark: {workload}, float32, median of "
          f"{repeats} epochs; {m['cpus']} CPUs ({m['processor'] or m['platform']}), "
          f"load average {', '.join(f'{v:.1f}' for v in m['load_average'] or [])}")
    for line in m["threads"]["numpy_blas"]:
        print(f"  NumPy {m['numpy']} BLAS: {line}")
    t = m["threads"].get("torch")
    if t:
        print(f"  torch {t['version']}: BLAS {t['blas']}, {t['threads']} intra-op threads, "
              f"CPU capability {t['cpu_capability']}")
    if m["env"]["OPENBLAS_CORETYPE"]:
        print(f"  note: OPENBLAS_CORETYPE={m['env']['OPENBLAS_CORETYPE']} in the environment "
              "forces that OpenBLAS kernel on NumPy (--native-blas runs without it)")
    if m["unset_for_this_run"]:
        print(f"  note: unset for this run (--native-blas): {m['unset_for_this_run']}")


if __name__ == "__main__":
    sys.exit(main())
