#!/usr/bin/env python3
"""The classic CNN trained by nnx as ``--dataset mnist --arch cnn`` and by plain PyTorch.

    python scripts/compare_torch.py --seeds 0 1 2 3 4 --masks torch nnx

It needs PyTorch (``pip install -e '.[torch]'``). With no MNIST files offline,
the data is MNIST-format files made from the bundled digits
(:mod:`scripts.mnist_like`: 28x28 uint8 IDX files, held-out digits as the test
set). nnx trains on them exactly as ``python scripts/train.py --dataset DIR
--arch cnn`` does, through :mod:`nnx.build` (plan, run directory, prepare,
train, finish), with every setting that ``--dataset mnist --arch cnn`` resolves
to (optimizer, learning rate, batch size, epochs, initialiser, dropout,
validation split, dtype), read from :mod:`nnx.settings`: a folder of IDX files
is how a user's own MNIST-format files are trained (the MNIST loader accepts
only the published files), and it reads the same bytes into the same arrays
(uint8 / 255, ``(28, 28)`` images; tests/test_conv_accuracy.py checks this).
By default 2,876 training images (two shifted copies of each of 1,438 digits;
the run holds out its validation split from them) and 1,436 test images (four
copies of each of the 359 other digits).

PyTorch then trains the same architecture (``torch.nn.Conv2d``, ``MaxPool2d``,
``Linear``, ``Dropout``, ``torch.optim.Adam``, ``F.cross_entropy``) from nnx's
initial weights (copied), on the same training split, in the same batch order
(the run's shuffle generator, replayed), with the optimizer's settings read from
the nnx run. Dropout masks are PyTorch's own (``--masks torch``, the default) or
nnx's replayed (``--masks nnx``, which makes the two runs the same computation up
to rounding). Both report test accuracy; the table gives each seed, the mean,
the spread (sample standard deviation) and the difference in points.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nnx import build  # noqa: E402
from nnx import settings as settings_mod  # noqa: E402
from scripts.mnist_like import write_mnist_like  # noqa: E402

__all__ = ["cli_flags", "train_nnx", "ClassicCNN", "train_torch", "compare", "table"]

#: settings that say where and how a run goes, not what it trains
RUN_ONLY = ("dataset", "data_dir", "out", "seed", "device", "epochs")


def cli_flags(folder, seed: int, out, *, epochs: int | None = None, dtype: str | None = None,
              device="cpu") -> dict:
    """The flags of ``train.py --dataset FOLDER --arch cnn`` that give the run every setting
    of ``--dataset mnist --arch cnn`` (its per-dataset defaults), with ``seed``, ``out``,
    ``device`` and, when given, ``epochs`` (a shorter run) and ``dtype``."""
    mnist = settings_mod.resolve({"dataset": "mnist", "arch": "cnn"})
    folder_run = settings_mod.resolve({"dataset": str(folder), "arch": "cnn"})
    flags = {k: v["value"] for k, v in mnist.items()
             if v["value"] != folder_run[k]["value"] and k not in RUN_ONLY}
    flags.update(dataset=str(folder), arch="cnn", seed=seed, out=str(out), device=device,
                 epochs=epochs if epochs is not None else mnist["epochs"]["value"])
    if dtype is not None:
        flags["dtype"] = dtype
    return flags


def _dropout_rng(model):
    return next(la.rng for la in model.layers if type(la).__name__ == "Dropout")


def train_nnx(folder, seed: int, out, *, epochs: int | None = None,
              dtype: str | None = None) -> dict:
    """Train as the command line does; returns the test accuracy and what PyTorch needs:
    initial and final weights, the training split, the test set, the shuffle and dropout
    generators' states before training, the optimizer's and the run's settings."""
    plan = build.plan(cli_flags(folder, seed, out, epochs=epochs, dtype=dtype))
    run_dir = build.open_run_dir(plan)
    try:
        run = build.prepare(plan, run_dir, quiet=True)
        tr = run.trainer
        record = {"initial": {k: np.array(v) for k, v in tr.model.get_weights().items()},
                  "shuffle": copy.deepcopy(tr.rng.bit_generator.state),
                  "masks": copy.deepcopy(_dropout_rng(tr.model).get_state())}
        t0 = time.perf_counter()
        history = build.train(run)
        elapsed = time.perf_counter() - t0
        summary = build.finish(run, history, elapsed)
    finally:
        run_dir.close()
        plan.comm.close()
    record.update(accuracy=summary["test_accuracy"], seconds=elapsed, settings=plan.settings,
                  optimizer=tr.optimizer.config(), n_out=tr.model.n_out,
                  final=tr.model.get_weights(),
                  x_train=tr.x_train, y_train=tr.y_train, x_test=run.x_test,
                  y_test=run.dataset.y_test)
    return record


class ReplayedDropout(torch.nn.Module):
    """Inverted dropout whose masks are nnx's: uniform numbers from the replayed NumPy
    generator of nnx's Dropout layer (in the activations' dtype, as nnx on NumPy draws
    them), kept below ``1 - p``, scaled by 1/(1-p)."""

    def __init__(self, p: float, state: dict) -> None:
        super().__init__()
        self.p, self.gen = p, np.random.default_rng()
        self.gen.bit_generator.state = state

    def forward(self, x):
        if not self.training:
            return x
        keep = 1.0 - self.p
        dtype = np.float32 if x.dtype == torch.float32 else np.float64
        u = torch.from_numpy(self.gen.random(tuple(x.shape), dtype=dtype))
        return x * ((u < keep).to(x.dtype) * (1.0 / keep))


class ClassicCNN(torch.nn.Module):
    """Conv 32 3x3 same, ReLU, max-pool 2, conv 64 3x3 same, ReLU, max-pool 2, dense 128,
    ReLU, dropout ``p``, dense ``n_out``. Takes images ``(batch, height, width, channels)``
    as nnx does and flattens the feature maps in nnx's (height, width, channel) order, so
    nnx's weights copy over unchanged but for the layouts (:meth:`load_nnx`)."""

    def __init__(self, image_shape, n_out: int, p: float, dropout=None) -> None:
        super().__init__()
        h, w, c = image_shape
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(c, 32, 3, padding="same"), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding="same"), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.head = torch.nn.Sequential(
            torch.nn.Linear((h // 4) * (w // 4) * 64, 128), torch.nn.ReLU(),
            dropout if dropout is not None else torch.nn.Dropout(p), torch.nn.Linear(128, n_out))

    def forward(self, x):
        maps = self.features(x.permute(0, 3, 1, 2))  # NHWC -> NCHW
        return self.head(maps.permute(0, 2, 3, 1).flatten(1))

    def load_nnx(self, weights: dict) -> None:
        """nnx's ``get_weights()`` in layer order: conv ``(k, k, C_in, F)`` becomes
        ``(F, C_in, k, k)``, dense ``(n_in, n_out)`` becomes ``(n_out, n_in)``."""
        ws = [v for k, v in weights.items() if k.endswith(".w")]
        bs = [v for k, v in weights.items() if k.endswith(".b")]
        mods = [m for m in self.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        if len(ws) != len(mods) or len(bs) != len(mods) or len(weights) != 2 * len(mods):
            raise ValueError(f"nnx weights {sorted(weights)} are not the classic CNN's")
        with torch.no_grad():
            for m, w, b in zip(mods, ws, bs):
                w = w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))  # checks shapes
                m.bias.copy_(torch.from_numpy(b))

    def nnx_weights(self) -> list[np.ndarray]:
        """Weights and biases in nnx's layouts and order (``w, b`` of each layer)."""
        out = []
        for m in self.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                w = m.weight.detach().numpy()
                out += [w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T, m.bias.detach().numpy()]
        return out


def train_torch(record: dict, *, masks: str = "torch", lr: float | None = None) -> dict:
    """Train :class:`ClassicCNN` as the nnx run of ``record`` (:func:`train_nnx`) was
    trained; returns ``{"accuracy", "seconds", "model"}``. ``lr`` overrides the run's."""
    s, opt_cfg = record["settings"], record["optimizer"]
    if opt_cfg["name"] != "adam" or opt_cfg.get("l2") or opt_cfg.get("weight_decay") \
            or opt_cfg.get("clip_norm") or s["batchnorm"]:
        raise ValueError(f"only plain Adam runs of the classic CNN are mirrored, not "
                         f"{opt_cfg}")
    dtype = getattr(torch, s["dtype"])
    x = torch.from_numpy(record["x_train"]).to(dtype)
    y = torch.from_numpy(record["y_train"])
    torch.manual_seed(s["seed"])  # PyTorch's own dropout stream
    replay = ReplayedDropout(s["dropout"], record["masks"]) if masks == "nnx" else None
    model = ClassicCNN(x.shape[1:], record["n_out"], s["dropout"], replay).to(dtype)
    model.load_nnx(record["initial"])
    opt = torch.optim.Adam(model.parameters(), lr=opt_cfg["lr"] if lr is None else lr,
                           betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"])
    shuffle = np.random.default_rng()
    shuffle.bit_generator.state = record["shuffle"]
    n, bs = x.shape[0], min(s["batch_size"], x.shape[0])
    t0 = time.perf_counter()
    model.train()
    for _ in range(s["epochs"]):
        # nnx's Trainer draws one permutation per epoch, unless one batch holds everything
        order = torch.from_numpy(shuffle.permutation(n)) if bs < n else torch.arange(n)
        for lo in range(0, n, bs):
            idx = order[lo:lo + bs]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()  # the mean over the batch
            opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        x_test = torch.from_numpy(record["x_test"]).to(dtype)
        pred = torch.cat([model(x_test[i:i + 1000]).argmax(1) for i in range(0, len(x_test),
                                                                            1000)])
    accuracy = float((pred.numpy() == record["y_test"]).mean())
    return {"accuracy": accuracy, "seconds": seconds, "model": model}


def compare(seeds, *, epochs: int | None = None, train_copies: int = 2, test_copies: int = 4,
            masks=("torch",), workdir=None, say=None) -> list[dict]:
    """One row per seed: ``{"seed", "nnx", "nnx_s", "torch": {mode: accuracy},
    "torch_s": {mode: seconds}}`` (test accuracies, training seconds) for each dropout
    ``masks`` mode, on MNIST-format files made in ``workdir`` (a temporary folder);
    ``say`` gets a line per seed as it ends."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "mnist-like"
        write_mnist_like(folder, train_copies, test_copies)
        rows = []
        for seed in seeds:
            record = train_nnx(folder, seed, Path(tmp) / f"run-{seed}", epochs=epochs)
            refs = {mode: train_torch(record, masks=mode) for mode in masks}
            rows.append({"seed": seed, "nnx": record["accuracy"], "nnx_s": record["seconds"],
                         "torch": {m: r["accuracy"] for m, r in refs.items()},
                         "torch_s": {m: r["seconds"] for m, r in refs.items()}})
            if say is not None:
                say(f"seed {seed}: nnx {record['accuracy']:.4f}, PyTorch " + ", ".join(
                    f"{r['accuracy']:.4f} ({m} masks)" for m, r in refs.items()))
    return rows


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def table(rows: list[dict]) -> str:
    """A Markdown table: each seed's test accuracies (%) and differences (points), then the
    mean and the spread (sample standard deviation over the seeds)."""
    modes = list(rows[0]["torch"])
    names = {"torch": "PyTorch", "nnx": "PyTorch, nnx's masks"}
    head = "| seed | nnx (%) | " + " | ".join(
        f"{names[m]} (%) | nnx - {names[m]} (points)" for m in modes) + " | seconds nnx / PyTorch |"
    lines = [head, "|---" * (3 + 2 * len(modes)) + "|"]
    nnx = np.array([r["nnx"] for r in rows]) * 100
    ref = {m: np.array([r["torch"][m] for r in rows]) * 100 for m in modes}
    for i, r in enumerate(rows):
        cells = [f"{ref[m][i]:.2f} | {nnx[i] - ref[m][i]:+.2f}" for m in modes]
        secs = " / ".join(f"{s:.0f}" for s in [r["nnx_s"], *r["torch_s"].values()])
        lines.append(f"| {r['seed']} | {nnx[i]:.2f} | " + " | ".join(cells) + f" | {secs} |")
    cells = [f"{ref[m].mean():.2f} ± {_sd(ref[m]):.2f} | {nnx.mean() - ref[m].mean():+.2f} ± "
             f"{_sd(nnx - ref[m]):.2f}" for m in modes]
    lines.append(f"| mean ± sd | {nnx.mean():.2f} ± {_sd(nnx):.2f} | " + " | ".join(cells)
                 + " | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the --dataset mnist setting")
    p.add_argument("--train-copies", type=int, default=2,
                   help="shifted copies of each training digit (default 2)")
    p.add_argument("--test-copies", type=int, default=4,
                   help="shifted copies of each held-out digit (default 4)")
    p.add_argument("--masks", choices=("torch", "nnx"), nargs="+", default=["torch"],
                   help="dropout masks of PyTorch's own generator (torch), or nnx's replayed "
                   "(nnx); both: one PyTorch run of each")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads, user_api="blas"):
        rows = compare(args.seeds, epochs=args.epochs, train_copies=args.train_copies,
                       test_copies=args.test_copies, masks=args.masks,
                       say=lambda line: print(line, file=sys.stderr, flush=True))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
