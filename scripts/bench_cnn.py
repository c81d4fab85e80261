"""The CNN workload of scripts/bench.py (``--workload cnn``).

The classic small CNN (conv 32 3x3 same, ReLU, max-pool 2, conv 64 3x3 same,
ReLU, max-pool 2, dense 128 ReLU, dropout 0.25, dense 10) on MNIST-shaped
images ``(n, 28, 28, 1)``, batch 128, Adam 1e-3, float32: nnx on NumPy, nnx on
torch and PyTorch eager (``--device cuda``: nnx on CuPy and torch:cuda, PyTorch
CUDA), timed interleaved in one run like the MLP configurations.

The images: ten fixed stroke patterns, one per class, each example shifted by
up to 3 pixels, a fifth of its strokes dropped and 3% noise pixels added
(about 13% of pixels lit). The GEMM floor is every product im2col and the dense
layers need in a step (nnx's own formulation; oneDNN's direct convolution in
PyTorch does the same arithmetic another way), timed alone at the best rate
this run measured.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from bench_impls import NnxImpl, TorchImpl
from bench_report import print_rows, summarise
from bench_sys import CpuMeter, matmul_seconds, memory_per_epoch, nnx_counts

SHAPE = (28, 28, 1)
CLASSES = 10
BATCH, LR = 128, 1e-3
CONFIG = "cnn adam b128"


def make_images(n: int, seed: int = 0):
    """``n`` images ``(n, 28, 28, 1)`` float32 in [0, 1] and int64 labels 0..9; the
    patterns are the same for every ``seed``, the examples differ."""
    t = np.random.default_rng(12345)
    protos = np.zeros((CLASSES, 28, 28), np.float32)
    for c in range(CLASSES):
        pts = t.integers(6, 22, (6, 2))
        for (a, b), (p, q) in zip(pts[:-1], pts[1:]):  # strokes 3 pixels wide
            for s in np.linspace(0.0, 1.0, 30):
                r, k = int(round(a + s * (p - a))), int(round(b + s * (q - b)))
                protos[c, r - 1:r + 2, k - 1:k + 2] = 1.0
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    shift = rng.integers(-3, 4, (n, 2))
    x = np.stack([np.roll(protos[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shift)])
    x = x * (rng.random(x.shape) < 0.8) + (rng.random(x.shape) < 0.03)
    x = np.minimum(x, 1.0) * rng.uniform(0.5, 1.0, x.shape)
    return x[..., None].astype(np.float32), y.astype(np.int64)


def step_matmuls(batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every product of one nnx CNN step: im2col forward, weight gradient
    and (but for the first layer) input gradient of each conv, the same for the dense."""
    shapes = []
    h, w, c = SHAPE
    for i, f in enumerate((32, 64)):  # 3x3 same convolutions, each followed by a 2x2 pool
        rows, k = batch * h * w, 9 * c
        shapes += [(rows, k, f), (k, rows, f)] + ([(rows, f, k)] if i else [])
        h, w, c = h // 2, w // 2, f
    for n_in, n_out in ((h * w * c, 128), (128, CLASSES)):
        shapes += [(batch, n_in, n_out), (n_in, batch, n_out), (batch, n_out, n_in)]
    return shapes


class CnnNnx(NnxImpl):
    """nnx's Trainer on the classic CNN (``nnx.cnn``)."""

    def make_model(self):
        import nnx

        return nnx.cnn(SHAPE, CLASSES)


class CnnTorch(TorchImpl):
    """The classic CNN in PyTorch eager, NCHW (its native layout), from nnx's initial
    weights: conv kernels transposed, the first dense layer's rows reordered from nnx's
    (height, width, channels) flattening to PyTorch's (channels, height, width)."""

    def inputs(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(
            self.device)

    def make_model(self):
        import nnx

        nn, torch = self.torch.nn, self.torch
        model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(0.25),
                              nn.Linear(128, CLASSES))
        w = nnx.cnn(SHAPE, CLASSES).init("numpy", self.seed).get_weights()
        dense0 = w["dense_7.w"].reshape(7, 7, 64, 128).transpose(2, 0, 1, 3).reshape(3136, 128)
        pairs = {0: (w["conv2d_0.w"].transpose(3, 2, 0, 1), w["conv2d_0.b"]),
                 3: (w["conv2d_3.w"].transpose(3, 2, 0, 1), w["conv2d_3.b"]),
                 7: (dense0.T, w["dense_7.b"]), 10: (w["dense_10.w"].T, w["dense_10.b"])}
        with torch.no_grad():
            for i, (weight, bias) in pairs.items():
                model[i].weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                model[i].bias.copy_(torch.from_numpy(bias))
        return model


def _impls(device: str, have_torch: bool):
    nnx_dev, torch_dev = ("cuda", "torch:cuda") if device == "cuda" else ("numpy", "torch")
    impls = [CnnNnx(nnx_dev, "adam", BATCH, LR)]
    if have_torch:
        impls += [CnnNnx(torch_dev, "adam", BATCH, LR),
                  CnnTorch("cuda" if device == "cuda" else "cpu", "adam", BATCH, LR)]
    return impls


def _floor(impls, n: int, rates: dict) -> dict:
    """Seconds of one epoch's products per implementation at the best rates seen so far."""
    from nnx import backends

    full, rest = divmod(n, BATCH)
    shapes = [s for b in [BATCH] * full + ([rest] if rest else []) for s in step_matmuls(b)]
    out = {}
    for impl in impls:
        label = impl.device if isinstance(impl, CnnNnx) else (
            "torch" if impl.device == "cpu" else "torch:cuda")
        backend = backends.get(label)
        got = matmul_seconds(set(shapes), backend, "float32")
        for s, sec in got.items():
            rates[(label, s)] = min(sec, rates.get((label, s), sec))
        out[impl.name] = (sum(rates[(label, s)] for s in shapes),
                          sum(2 * m * k * q for (m, k, q) in shapes) / 1e9)
    return out


def _time_epochs(impls, repeats: int, pause: float) -> dict:
    """``{name: (wall seconds, other processes' CPU share, this process's CPU seconds)}``
    of each timed epoch, interleaved; the order rotates every round."""
    out = {impl.name: ([], [], []) for impl in impls}
    meter = CpuMeter()
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
            time.sleep(pause)
            meter.start()
            before = sum(os.times()[:2])
            wall = impl.epoch()
            out[impl.name][2].append(sum(os.times()[:2]) - before)
            out[impl.name][1].append(meter.stop())
            out[impl.name][0].append(wall)
    return out


def _print_cpu(rows) -> None:
    ref = next((r["cpu_s_per_epoch"] for r in rows if r["impl"].startswith("pytorch")), None)
    print(f"{'':<11} CPU seconds per epoch (this process, all threads; less disturbed by "
          "other processes than the wall time):")
    for row in rows:
        vs = f" ({row['cpu_s_per_epoch'] / ref:.2f}x)" if ref else ""
        print(f"{'':<11} {row['impl']:<22} {row['cpu_s_per_epoch']:>8.3f}{vs}")


def _memory(x, y) -> dict:
    import nnx

    m = min(x.shape[0], 4096)
    memory = memory_per_epoch(x[:m], y[:m], None, model=nnx.cnn(SHAPE, CLASSES),
                              optimizer=nnx.Adam(LR))
    print(f"\nmemory (nnx numpy, CNN, batch {BATCH}, {m} samples): peak RSS per epoch "
          f"{memory['peak_rss_mib']} MiB; epoch 5 vs epoch 2: "
          f"{100 * memory['epoch5_vs_epoch2']:+.1f}%")
    return memory


def run_cnn(args, have_torch: bool, pause: float) -> tuple[list[dict], dict | None]:
    """Time the CNN workload; returns (rows, memory per epoch of nnx on NumPy or None)."""
    n = args.cnn_samples
    x, y = make_images(n)
    xv, yv = make_images(min(2000, n), seed=99)
    impls = _impls(args.device, have_torch)
    rates = {}
    _floor(impls, n, rates)
    majority = np.bincount(yv).max() / yv.shape[0]
    for impl in impls:
        impl.setup(x, y)
        impl.start = impl.evaluate(xv, yv)
        impl.warmup(10)
    timed = _time_epochs(impls, args.repeats, pause)
    floors = _floor(impls, n, rates)
    rows = []
    for impl in impls:
        loss, acc = impl.evaluate(xv, yv)
        times, others, cpu = timed[impl.name]
        row = summarise(impl, times, others, n, *floors[impl.name])
        row.update(config=CONFIG, optimizer="adam", batch=BATCH, loss=loss, accuracy=acc,
                   cpu_s_per_epoch=statistics.median(cpu), cpu_times=cpu,
                   start_loss=impl.start[0],
                   learned=bool(loss < impl.start[0] - 0.05 and acc > majority + 0.1))
        if isinstance(impl, CnnNnx):
            row.update(nnx_counts(impl.device, (int(np.prod(SHAPE)), CLASSES), "adam", batch=16,
                                  steps=4, model=impl.make_model, input_shape=SHAPE))
        else:
            row["torch_ops_per_step"] = impl.ops_per_step()
        rows.append(row)
    ref = next((r["s_per_epoch"] for r in rows if r["impl"].startswith("pytorch")), None)
    for row in rows:
        row["vs_pytorch"] = row["s_per_epoch"] / ref if ref else None
    print_rows(rows)
    _print_cpu(rows)
    return rows, _memory(x, y) if args.device == "cpu" else None
