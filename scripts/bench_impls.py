"""The implementations that scripts/bench.py times, each behind the same small interface.

``setup(x, y)`` (untimed), ``warmup(steps)`` (untimed), ``epoch() -> seconds``
(one shuffled pass, timed), ``evaluate(x, y) -> (loss, accuracy)``, and
``input_grad``: whether a step computes the input layer's dx (see
:func:`step_matmuls`, which lists the products one step must compute).
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager

import numpy as np

SIZES = (784, 512, 256, 10)


def step_matmuls(batch: int, input_grad: bool) -> list[tuple[int, int, int]]:
    """Matmul shapes of one MLP step: forward, weight gradients, input gradients."""
    shapes = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        shapes.append((batch, n_in, n_out))          # forward x @ w
        shapes.append((n_in, batch, n_out))          # dw = x^T dy
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        if i > 0 or input_grad:
            shapes.append((batch, n_out, n_in))      # dx = dy w^T
    return shapes


class NnxImpl:
    """nnx's Trainer on a backend (numpy, torch, cuda, ...); the epoch time is the one
    the Trainer logs (from the epoch's start to its logging point, which reads the
    device, so queued GPU work is included)."""

    input_grad = False

    def __init__(self, device, optimizer, batch, lr, seed=0):
        self.device, self.opt_name, self.batch, self.lr = device, optimizer, batch, lr
        self.seed = seed
        self.name = f"nnx {device}"

    def setup(self, x, y):
        import nnx

        opt = nnx.SGD(self.lr, momentum=0.9) if self.opt_name == "sgdm" else nnx.Adam(self.lr)
        self.trainer = nnx.Trainer(self.make_model(), "cross_entropy", opt,
                                   device=self.device, seed=self.seed)
        self.x, self.y = x, y
        self.backend = self.trainer.backend

    def make_model(self):
        import nnx

        return nnx.mlp(list(SIZES))

    def warmup(self, steps):
        if self.batch >= self.x.shape[0]:  # full batch: one step per epoch
            self.trainer.fit(self.x, self.y, epochs=steps, batch_size=self.batch)
            return
        n = min(self.x.shape[0], steps * self.batch)
        self.trainer.fit(self.x[:n], self.y[:n], epochs=1, batch_size=min(self.batch, n))

    def epoch(self) -> float:
        self.trainer.fit(self.x, self.y, epochs=1, batch_size=self.batch)
        return self.trainer.history["time"][-1]

    def evaluate(self, x, y):
        r = self.trainer.evaluate(x, y)
        return r["loss"], r["accuracy"]


class TorchImpl:
    """Native PyTorch eager: nn.Sequential, autograd, torch.optim; the same initial
    weights as nnx (He normal, zero biases) so both learn alike."""

    input_grad = False

    def __init__(self, device, optimizer, batch, lr, seed=0):
        self.device, self.opt_name, self.batch, self.lr, self.seed = (device, optimizer, batch,
                                                                     lr, seed)
        self.name = "pytorch eager" + ("" if device == "cpu" else f" {device}")

    def setup(self, x, y):
        import torch

        self.torch = torch
        torch.manual_seed(self.seed)
        self.model = self.make_model().to(self.device)
        params = self.model.parameters()
        self.opt = (torch.optim.SGD(params, lr=self.lr, momentum=0.9) if self.opt_name == "sgdm"
                    else torch.optim.Adam(params, lr=self.lr))
        self.x = self.inputs(x)
        self.y = torch.from_numpy(y).to(self.device)
        self.gen = torch.Generator().manual_seed(self.seed)

    def inputs(self, x):
        """Host inputs as the tensor the model takes."""
        return self.torch.from_numpy(x).to(self.device)

    def make_model(self):
        """The MLP with nnx's initial weights for the seed."""
        torch = self.torch
        layers = []
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(SIZES) - 2:
                layers.append(torch.nn.ReLU())
        import nnx

        weights = nnx.mlp(list(SIZES)).init("numpy", self.seed).get_weights()
        with torch.no_grad():
            for i, lin in enumerate(m for m in layers if isinstance(m, torch.nn.Linear)):
                lin.weight.copy_(torch.from_numpy(weights[f"dense_{2 * i}.w"].T.copy()))
                lin.bias.copy_(torch.from_numpy(weights[f"dense_{2 * i}.b"]))
        return torch.nn.Sequential(*layers)

    def _steps(self, n_steps=None):
        torch = self.torch
        n = self.x.shape[0]
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        steps = math.ceil(n / self.batch) if n_steps is None else n_steps
        for s in range(steps):
            idx = perm[s * self.batch:(s + 1) * self.batch]
            out = self.model(self.x[idx])
            loss = torch.nn.functional.cross_entropy(out, self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def warmup(self, steps):
        per_epoch = math.ceil(self.x.shape[0] / self.batch)
        for done in range(0, steps, per_epoch):
            self._steps(min(per_epoch, steps - done))
        self._sync()

    def _sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()

    def epoch(self) -> float:
        t0 = time.perf_counter()
        self._steps()
        self._sync()
        return time.perf_counter() - t0

    def evaluate(self, x, y):
        torch = self.torch
        with torch.no_grad():
            out = self.model(self.inputs(x))
            yt = torch.from_numpy(y).to(self.device)
            loss = float(torch.nn.functional.cross_entropy(out, yt))
            acc = float((out.argmax(1) == yt).float().mean())
        return loss, acc

    #: ATen operations that make views or read metadata: no kernel, as nnx's count
    VIEWS = frozenset({"aten::t", "aten::view", "aten::detach", "aten::slice", "aten::transpose",
                       "aten::expand", "aten::as_strided", "aten::alias", "aten::unsqueeze",
                       "aten::squeeze", "aten::select", "aten::permute", "aten::_unsafe_view"})

    def ops_per_step(self) -> int | None:
        """ATen operations of one training step, from PyTorch's profiler.

        Counts each outermost ``aten::`` call (one that no other ATen call
        contains: autograd's backward functions and the optimizer's loop are
        looked into), leaving out views; the difference between profiles of
        three steps and of two, so that the epoch's shuffle does not count.
        """
        try:
            from torch.profiler import ProfilerActivity, profile
        except ImportError:
            return None

        def ops(steps):
            with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
                self._steps(steps)
            n = 0
            for e in prof.events():
                if not e.name.startswith("aten::") or e.name in self.VIEWS:
                    continue
                p = e.cpu_parent
                while p is not None and not p.name.startswith("aten::"):
                    p = p.cpu_parent
                n += p is None
            return n

        try:
            return ops(3) - ops(2)
        except Exception:  # the profiler is unavailable in this build
            return None


@contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null: PyTorch's profiler writes a line
    (``USDT:... profiler_start``) to it from C++ at every start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class CourseImpl:
    """The "before" picture: a course-style NumPy loop, float64, params in a dict."""

    input_grad = True

    def __init__(self, optimizer, batch, lr, seed=0):
        self.batch, self.lr, self.seed, self.opt_name = batch, lr, seed, optimizer
        self.name = "numpy loop (float64)"

    def setup(self, x, y):
        rng = np.random.default_rng(self.seed)
        self.p = {}
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            self.p[f"W{i}"] = rng.standard_normal((a, b)) * np.sqrt(2.0 / a)
            self.p[f"b{i}"] = np.zeros(b)
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0
        self.x, self.y = x.astype(np.float64), y
        self.rng = rng

    def _forward(self, x):
        cache = [x]
        a = x
        for i in range(len(SIZES) - 1):
            z = np.dot(a, self.p[f"W{i}"]) + self.p[f"b{i}"]
            a = np.maximum(z, 0) if i < len(SIZES) - 2 else z
            cache.append(a)
        return a, cache

    def _step(self, xb, yb):
        logits, cache = self._forward(xb)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        probs[np.arange(len(yb)), yb] -= 1
        d = probs / len(yb)
        grads = {}
        for i in reversed(range(len(SIZES) - 1)):
            grads[f"W{i}"] = np.dot(cache[i].T, d)
            grads[f"b{i}"] = d.sum(axis=0)
            d = np.dot(d, self.p[f"W{i}"].T)
            if i > 0:
                d = d * (cache[i] > 0)
        self.t += 1
        for k in self.p:
            if self.opt_name == "sgdm":
                self.v[k] = 0.9 * self.v[k] + grads[k]
                self.p[k] = self.p[k] - self.lr * self.v[k]
            else:
                self.m[k] = 0.9 * self.m[k] + 0.1 * grads[k]
                self.v[k] = 0.999 * self.v[k] + 0.001 * grads[k] ** 2
                mh = self.m[k] / (1 - 0.9 ** self.t)
                vh = self.v[k] / (1 - 0.999 ** self.t)
                self.p[k] = self.p[k] - self.lr * mh / (np.sqrt(vh) + 1e-8)

    def _run(self, steps=None):
        n = self.x.shape[0]
        perm = self.rng.permutation(n)
        total = math.ceil(n / self.batch) if steps is None else steps
        for s in range(total):
            idx = perm[s * self.batch:(s + 1) * self.batch]
            self._step(self.x[idx], self.y[idx])

    def warmup(self, steps):
        per_epoch = math.ceil(self.x.shape[0] / self.batch)
        for done in range(0, steps, per_epoch):
            self._run(min(per_epoch, steps - done))

    def epoch(self) -> float:
        t0 = time.perf_counter()
        self._run()
        return time.perf_counter() - t0

    def evaluate(self, x, y):
        logits, _ = self._forward(x.astype(np.float64))
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(1) == y).mean())
