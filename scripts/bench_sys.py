"""What scripts/bench.py measures besides epochs: the machine, matmul rates, memory, counts.

- :func:`blas_info` / :func:`thread_info`: the BLAS libraries, kernels and threads in use;
- :func:`matmul_seconds`: the best time of each (m, k, n) product on a backend (GEMM floor);
- :class:`CpuMeter`: how much CPU *other* processes took while an epoch was timed;
- :func:`memory_per_epoch`: peak RSS of each epoch of nnx on NumPy;
- :func:`nnx_counts`: array operations and host syncs per step and per epoch (counting backend).
"""

from __future__ import annotations

import os
import time

import numpy as np


def blas_info() -> list[dict]:
    """The thread pools threadpoolctl sees (BLAS and OpenMP): library, kernel, threads."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "pip install threadpoolctl to see the BLAS in use"}]
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "filepath")
    return [{k: i.get(k) for k in keys} for i in threadpoolctl.threadpool_info()]


def thread_info() -> dict:
    """Threads each library computes with: NumPy's BLAS, torch's intra-op pool, torch's BLAS."""
    blas = [b for b in blas_info() if b.get("user_api") == "blas"]
    out = {"numpy_blas": [f"{b['internal_api']} {b.get('version') or ''} kernel="
                          f"{b.get('architecture')} threads={b.get('num_threads')}" for b in blas]}
    try:
        import torch
    except ImportError:
        return out
    config = torch.__config__.show()
    torch_blas = next((p.split("=", 1)[1] for p in config.replace(",", " ").split()
                       if p.startswith("BLAS_INFO=")), "unknown")
    cap = next((line.split(":", 1)[1].strip() for line in config.splitlines()
                if "CPU capability" in line), "unknown")
    out["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                    "blas": torch_blas, "cpu_capability": cap}
    return out


def matmul_seconds(shapes, backend, dtype: str) -> dict:
    """Seconds per call of each ``(m, k, n)`` matmul on ``backend``: the best round.

    Small products run 10 calls a round, 5 rounds; products of more than 1
    GFLOP one call, 3 rounds. Operands are uploaded once; each round is
    bracketed by ``backend.synchronize()`` so a GPU's queue is drained first.
    """
    xp = backend.xp
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in sorted(set(shapes)):
        big = 2 * m * k * n > 1e9
        repeats, n_rounds = (1, 3) if big else (10, 5)
        a = backend.asarray(rng.random((m, k)), dtype)
        b = backend.asarray(rng.random((k, n)), dtype)
        for _ in range(1 if big else 3):
            xp.matmul(a, b)
        rounds = []
        for _ in range(n_rounds):
            backend.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                xp.matmul(a, b)
            backend.synchronize()
            rounds.append((time.perf_counter() - t0) / repeats)
        out[(m, k, n)] = min(rounds)
    return out


class CpuMeter:
    """CPU seconds that other processes used between :meth:`start` and :meth:`stop`.

    Reads the machine's busy time from ``/proc/stat`` and this process's own
    time from ``os.times()`` (all its threads). ``stop()`` returns the others'
    share of the machine over the interval (0 when idle; None where ``/proc`` is
    missing). A share above a few percent means the timing is not to be trusted.
    """

    def _busy(self):
        try:
            with open("/proc/stat", encoding="ascii") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            return None
        idle = vals[3] + vals[4]
        return (sum(vals) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        t = os.times()
        self._t0, self._own0, self._busy0 = time.perf_counter(), t.user + t.system, self._busy()

    def stop(self) -> float | None:
        busy, t = self._busy(), os.times()
        if busy is None or self._busy0 is None:
            return None
        wall = time.perf_counter() - self._t0
        others = (busy - self._busy0) - (t.user + t.system - self._own0)
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


def _rss_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_per_epoch(x, y, sizes, epochs: int = 5, batch: int = 128, model=None,
                     optimizer=None) -> dict:
    """Peak RSS (MiB) of each epoch of nnx on NumPy, from one ``fit``.

    The model is the MLP of ``sizes`` with SGD and momentum unless ``model`` and
    ``optimizer`` are given.

    The peak is reset at each epoch's start where the kernel allows it, so each
    value is that epoch's own peak; otherwise the process's running peak is
    reported (``per_epoch`` False), which can only hide growth, not invent it.
    """
    import resource

    import nnx

    peaks, per_epoch = [], [True]

    class Rss(nnx.callbacks.Callback):
        def on_epoch_begin(self, tr, epoch):
            per_epoch[0] = per_epoch[0] and _reset_peak()

        def on_epoch_end(self, tr, epoch, logs):
            hwm = _rss_mib("VmHWM") if per_epoch[0] else None
            peaks.append(hwm if hwm is not None else
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    trainer = nnx.Trainer(model or nnx.mlp(list(sizes)), "cross_entropy",
                          optimizer or nnx.SGD(0.05, momentum=0.9), device="numpy")
    trainer.fit(x, y, epochs=epochs, batch_size=batch, callbacks=[Rss()])
    growth = peaks[4] / peaks[1] - 1 if len(peaks) >= 5 else None
    return {"peak_rss_mib": [round(p, 1) for p in peaks], "epoch5_vs_epoch2": growth,
            "per_epoch": per_epoch[0], "batch": batch, "samples": int(x.shape[0])}


def nnx_counts(device: str, sizes, optimizer: str, batch: int = 64, steps: int = 6,
               model=None, input_shape=None) -> dict:
    """Array operations and host syncs of one nnx training step and of one epoch.

    Trains on :func:`nnx.testing.counting.counting_backend` around ``device``:
    what is counted is that backend's own path (fast paths included). The MLP of
    ``sizes`` unless ``model`` (a function returning one) and one example's
    ``input_shape`` are given.
    """
    import nnx
    from nnx import backends
    from nnx.testing.counting import counting_backend

    try:
        backend = counting_backend(backends.get(device))
    except backends.BackendUnavailable:
        return {}
    rng = np.random.default_rng(1)
    x = rng.random((batch * steps, *(input_shape or (sizes[0],))), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch * steps)
    opt = nnx.SGD(0.05, momentum=0.9) if optimizer == "sgdm" else nnx.Adam(1e-3)
    trainer = nnx.Trainer(model() if model else nnx.mlp(list(sizes)), "cross_entropy", opt,
                          device=backend)
    marks = []

    class Probe(nnx.callbacks.Callback):
        def on_step_end(self, tr, state):
            marks.append((backend.counts.ops, backend.counts.syncs))

    trainer.fit(x, y, epochs=1, batch_size=batch)  # warm: optimizer state exists
    before = backend.counts.syncs
    trainer.fit(x, y, epochs=1, batch_size=batch, callbacks=[Probe()])
    ops = {b[0] - a[0] for a, b in zip(marks, marks[1:])}
    syncs = {b[1] - a[1] for a, b in zip(marks, marks[1:])}
    return {"ops_per_step": max(ops), "syncs_per_step": max(syncs),
            "syncs_per_epoch": backend.counts.syncs - before}
