"""The doctor's cost in scripts/bench.py: training time with and without the doctor.

Two runs, each trained whole with and without the doctor, each time in a new Python
process (as a real run: nothing cached, the memory allocator in its initial state -
runs one after another in one process differed by several percent for that alone),
interleaved (the order alternates every pair, after a pause), several pairs; the
cost is the median over the pairs of (time with the doctor / time without) - 1, in
wall time and in the process's CPU time (less disturbed by other processes). Every
timed run also records the CPU share other processes took and the load average, so
a figure measured on a busy machine says so; and the doctor's own time
(``Doctor.seconds``), which other processes disturb far less.

- **digits default**: the run ``python scripts/train.py --quiet`` makes: its flags
  parsed by the command line's own parser, built by :mod:`nnx.build` as the command
  builds it (settings from :mod:`nnx.settings`: the bundled digits, a 512-256 ReLU
  MLP, Adam, batch 64, 30 epochs), in a fresh run directory; ``--doctor`` is the
  only flag that differs. Timed as the command times it (its "done in ... s"):
  ``nnx.build.train``, which with the doctor holds everything it adds - the checks
  before the first step, the monitor, the detectors and the report written to
  doctor.json and doctor.md. Fix verification (retraining copies of the run) runs
  only when a run has findings; the row says whether it ran.
- **MNIST-shaped**: the benchmark's MLP (784-512-256-10, SGD with momentum 0.9,
  lr 0.05, batch 128, float32 on NumPy) on its synthetic data and its 5,000
  validation examples, one whole fit of ``EPOCHS`` epochs, with the doctor as
  ``--doctor`` sets it up (a run directory, fixes verified): its checks of the
  training inputs (the leakage check against the validation set included) count
  once per fit, as in a real run. A real MNIST run trains 20 epochs, over which
  that fixed part weighs less than here.

``python scripts/bench_doctor.py --worker digits|mnist DIR EPOCHS [--doctor]`` is one
such process: it prints its times and what the doctor said as one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from bench_impls import SIZES
from bench_report import BUSY
from bench_sys import CpuMeter

#: epochs of the MNIST-shaped fit
EPOCHS = 3
#: pairs (with and without the doctor) of each run: (default, --quick)
PAIRS = {"digits default": (15, 8), "mnist-shaped": (5, 3)}
#: the benchmark's MLP configuration the MNIST-shaped run trains
MNIST_CONFIG = ("sgdm", 128, 0.05)
#: what a run's ``info`` says about the run itself (the rest: what the doctor said and did)
ABOUT = ("steps", "epochs", "batch", "model", "optimizer", "samples")


def pair_costs(without: list[float], with_doctor: list[float]) -> tuple[float, list[float]]:
    """The median cost and every pair's, ``with / without - 1``, of paired times."""
    if len(without) != len(with_doctor) or not without:
        raise ValueError("need as many times with the doctor as without, at least one")
    costs = [b / a - 1 for a, b in zip(without, with_doctor)]
    return statistics.median(costs), costs


def median_error(values: list[float]) -> float:
    """The standard error of the median of ``values``: 1.2533 sigma / sqrt(n) (normal
    samples), sigma estimated robustly as 1.4826 times the median absolute deviation."""
    mid = statistics.median(values)
    mad = statistics.median(abs(v - mid) for v in values)
    return 1.2533 * 1.4826 * mad / len(values) ** 0.5


def own_share(with_doctor: list[float], seconds: list[dict]) -> dict:
    """The doctor's own time (``Doctor.seconds`` of each run with it) as a share of the rest
    of that run's training time, the median over the runs, in all and by part."""
    def share(part):
        return statistics.median(
            (sum(s.values()) if part is None else s[part]) / (t - sum(s.values()))
            for t, s in zip(with_doctor, seconds))
    return {"all": share(None), **{part: share(part) for part in seconds[0]}}


def disturbed_pairs(others: list[tuple]) -> int:
    """Pairs in which other processes took more than ``BUSY`` of the CPU during either run."""
    return sum(any(o is not None and o > BUSY for o in pair) for pair in others)


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


class ChildMeter(CpuMeter):
    """:class:`bench_sys.CpuMeter` for a run in a child process: the children this process
    waited for count as its own, not as other processes."""

    def start(self) -> None:
        t = os.times()
        self._children0 = t.children_user + t.children_system
        super().start()

    def stop(self) -> float | None:
        share = super().stop()
        if share is None:
            return None
        t = os.times()
        children = t.children_user + t.children_system - self._children0
        wall = time.perf_counter() - self._t0
        return max(0.0, share - children / (wall * (os.cpu_count() or 1)))


def time_pairs(run, pairs: int, pause: float) -> dict:
    """``run(doctor) -> (wall s, cpu s, info)`` timed ``pairs`` times each way, interleaved
    (without, with; then with, without; ...). Returns the times, the other processes'
    share of each run, the load average around each pair and the ``info`` of each run."""
    out = {"wall": ([], []), "cpu": ([], []), "others": [], "load": [], "info": ([], [])}
    meter = ChildMeter()
    for p in range(pairs):
        order = (False, True) if p % 2 == 0 else (True, False)
        others, load = [None, None], [_load()]
        for doctor in order:
            time.sleep(pause)
            meter.start()
            wall, cpu, info = run(doctor)
            others[doctor] = meter.stop()
            out["wall"][doctor].append(wall)
            out["cpu"][doctor].append(cpu)
            out["info"][doctor].append(info)
        load.append(_load())
        out["others"].append(tuple(others))
        out["load"].append(load)
    return out


def cost_row(name: str, timed: dict) -> dict:
    """One row of the doctor's cost: the run (``info`` of the last run with the doctor),
    medians, per-pair costs, disturbance, load, and what the doctor said and did."""
    wall, costs = pair_costs(*timed["wall"])
    cpu, cpu_costs = pair_costs(*timed["cpu"])
    loads = [v for pair in timed["load"] for v in pair if v is not None]
    info = dict(timed["info"][1][-1])
    about = {k: info.pop(k) for k in ABOUT if k in info}
    info.pop("seconds", None)
    own = own_share(timed["wall"][1], [i["seconds"] for i in timed["info"][1]])
    return {"config": name, **about, "cost": wall, "cost_error": median_error(costs),
            "cpu_cost": cpu, "cpu_cost_error": median_error(cpu_costs), "own": own,
            "costs": costs,
            "cpu_costs": cpu_costs, "s_without": statistics.median(timed["wall"][0]),
            "s_with": statistics.median(timed["wall"][1]), "wall_s": timed["wall"],
            "cpu_s": timed["cpu"], "others_cpu": timed["others"],
            # bench_report's notion of a disturbed measurement: "times" and "disturbed"
            "times": costs, "disturbed": disturbed_pairs(timed["others"]),
            "load_average": [min(loads), max(loads)] if loads else None,
            "doctor": info}


# --- the two runs ------------------------------------------------------------------------


def digits_run(doctor: bool):
    """The command line's default run, trained in a fresh run directory; returns the wall
    and CPU seconds of ``nnx.build.train`` and what the doctor said and did."""
    from nnx import build, cli, settings

    said = []
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--quiet", "--out", os.path.join(tmp, "run")] + (["--doctor"] if doctor else [])
        args = cli.build_parser().parse_args(argv)
        flags = {s.name: getattr(args, s.name) for s in settings.SETTINGS}
        plan = build.plan(flags, args.config, args.resume)
        out = build.open_run_dir(plan)
        try:
            run = build.prepare(plan, out, quiet=True, say=said.append)
            wall, cpu = time.perf_counter(), time.process_time()
            build.train(run)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            out.close()
        s = plan.settings
        about = {"steps": run.trainer.step, "epochs": s["epochs"], "batch": s["batch_size"],
                 "model": f"{s['hidden']} {s['activation']}", "optimizer": s["optimizer"],
                 "samples": int(run.trainer.n_train)}
    return wall, cpu, {**about, **_doctor_info(run.doctor, said)}


def _doctor_info(doctor, said) -> dict:
    if doctor is None:
        return {}
    report = doctor.report
    return {"said": said, "healthy": report.healthy, "fixes_verified": bool(report.trials),
            "findings": sorted(report.ids()), "seconds": dict(doctor.seconds)}


def mnist_run(data, epochs: int, doctor: bool):
    """One whole fit of the benchmark's MLP on ``data`` (training and validation ``(x, y)``);
    returns its wall and CPU seconds and what the doctor said and did."""
    import nnx
    from nnx.doctor import Doctor

    (x, y), (xv, yv) = data
    opt_name, batch, lr = MNIST_CONFIG
    said = []
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [Doctor(out_dir=tmp, verify_fixes=True, print_fn=said.append)] \
            if doctor else []
        trainer = nnx.Trainer(nnx.mlp(list(SIZES)), "cross_entropy", nnx.SGD(lr, momentum=0.9),
                              device="numpy", seed=0)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.fit(x, y, epochs=epochs, batch_size=batch, validation_data=(xv, yv),
                    callbacks=callbacks)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    about = {"steps": trainer.step, "epochs": epochs, "batch": batch, "optimizer":
             f"{opt_name} lr {lr}", "model": "-".join(map(str, SIZES)),
             "samples": int(x.shape[0])}
    return wall, cpu, {**about, **_doctor_info(callbacks[0] if doctor else None, said)}


def in_new_process(*what: str):
    """``run(doctor)`` for :func:`time_pairs`: this script's ``--worker`` with ``what``."""
    def run(doctor: bool):
        argv = [sys.executable, os.path.abspath(__file__), "--worker", *what]
        done = subprocess.run(argv + (["--doctor"] if doctor else []), capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        return got["wall"], got["cpu"], got["info"]
    return run


def _worker(argv) -> int:
    """One run (``digits``, or ``mnist DIR EPOCHS`` with the data in DIR), printed as JSON."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    doctor = "--doctor" in argv
    argv = [a for a in argv if a != "--doctor"]
    if argv[0] == "digits":
        wall, cpu, info = digits_run(doctor)
    else:
        data = [np.load(os.path.join(argv[1], f"{k}.npy")) for k in ("x", "y", "xv", "yv")]
        wall, cpu, info = mnist_run((data[:2], data[2:]), int(argv[2]), doctor)
    print(json.dumps({"wall": wall, "cpu": cpu, "info": info}))
    return 0


# --- the measurement ---------------------------------------------------------------------


def run_doctor(args, data, pause: float) -> dict:
    """Both measurements, printed; ``{"digits default": row, "mnist-shaped": row}``."""
    pairs = {name: default[1 if args.quick else 0] for name, default in PAIRS.items()}
    if getattr(args, "doctor_pairs", None):  # (digits, MNIST-shaped) from --doctor-pairs
        pairs = dict(zip(PAIRS, args.doctor_pairs))
    print(f"\ndoctor cost: training time with the doctor against without, interleaved, "
          f"median over pairs (load average {_load_text()})")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, v in zip(("x", "y", "xv", "yv"), (*data[0], *data[1])):
            np.save(os.path.join(tmp, f"{k}.npy"), v)
        runs = {"digits default": in_new_process("digits"),
                "mnist-shaped": in_new_process("mnist", tmp, str(EPOCHS))}
        runs["digits default"](False), runs["digits default"](True)  # untimed: file caches
        for name, run in runs.items():
            if not pairs[name]:
                continue
            t0 = time.perf_counter()
            rows[name] = row = cost_row(name, time_pairs(run, pairs[name], pause))
            row["measure_s"] = round(time.perf_counter() - t0, 1)
            print_cost(row)
    return rows


def _load_text() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "-"


def print_cost(row: dict) -> None:
    """Two lines: the run, its times and cost; what the doctor said."""
    load = row["load_average"]
    notes = [f"load {load[0]:.1f}-{load[1]:.1f}" if load else "load unknown"]
    if row["disturbed"]:
        notes.append(f"{row['disturbed']} of {len(row['costs'])} pairs disturbed by other "
                     "processes")
    print(f"  {row['config']:<15} {row['model']}, {row['optimizer']}, batch {row['batch']}, "
          f"{row['samples']} samples, {row['epochs']} epochs ({row['steps']} steps): "
          f"{row['s_without']:.2f} s -> {row['s_with']:.2f} s, {100 * row['cost']:+.1f}% "
          f"+- {100 * row['cost_error']:.1f}% (CPU time {100 * row['cpu_cost']:+.1f}% +- "
          f"{100 * row['cpu_cost_error']:.1f}%), median of {len(row['costs'])} pairs "
          f"(from {100 * min(row['costs']):+.1f}% to {100 * max(row['costs']):+.1f}%); "
          + "; ".join(notes))
    doc = row["doctor"]
    said = " / ".join(doc.get("said") or ["(nothing)"])
    verified = ("fixes verified" if doc.get("fixes_verified") else
                "no fix verification (it runs only on a run with findings)")
    print(f"  {'':<15} the doctor said: {said}; {verified}")
    own = row["own"]
    print(f"  {'':<15} its own time (Doctor.seconds): {100 * own['all']:.1f}% of the rest of "
          "training: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in own.items() if k != "all"))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.exit(_worker(sys.argv[2:]))
