"""The rows, table and goal check of scripts/bench.py."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

#: other processes' share of the CPU above which a timed epoch counts as disturbed
BUSY = 0.05


def summarise(impl, times, others, n, floor, gflop) -> dict:
    """One row: median epoch, throughput, GEMM floor fraction, disturbance."""
    med = statistics.median(times)
    busy = [o for o in others if o is not None]
    return {"impl": impl.name, "s_per_epoch": med, "samples_per_s": n / med, "times": times,
            "others_cpu": others, "disturbed": sum(o > BUSY for o in busy), "gemm_floor_s": floor,
            "gemm_fraction": floor / med if floor else None, "gflop_per_epoch": gflop,
            "input_layer_dx": impl.input_grad}


def print_rows(rows) -> None:
    print(f"\n{rows[0]['config']:<11} {'implementation':<22} {'s/epoch':>8} {'samples/s':>10} "
          f"{'vs torch':>8} {'GEMM floor':>10} {'ops/step':>8} {'syncs/step':>10} "
          f"{'val acc':>7} learned")
    for r in rows:
        vs = f"{r['vs_pytorch']:.2f}x" if r.get("vs_pytorch") else "-"
        floor = f"{100 * r['gemm_fraction']:.0f}%" if r.get("gemm_fraction") else "-"
        ops = r.get("ops_per_step", r.get("torch_ops_per_step"))
        syncs = r.get("syncs_per_step")
        mark = (f"  ({r['disturbed']} of {len(r['times'])} epochs disturbed by other processes)"
                if r.get("disturbed") else "")
        print(f"{'':<11} {r['impl']:<22} {r['s_per_epoch']:>8.3f} {r['samples_per_s']:>10,.0f} "
              f"{vs:>8} {floor:>10} {'-' if ops is None else ops:>8} "
              f"{'-' if syncs is None else syncs:>10} {r['accuracy']:>7.3f} "
              f"{'yes' if r['learned'] else 'NO'}{mark}")


def _busy(*rows) -> str:
    """A warning for times measured while other processes were busy (half the epochs)."""
    return " (measured while other processes were busy)" if any(
        2 * r.get("disturbed", 0) >= len(r["times"]) for r in rows) else ""


@dataclass(frozen=True)
class _Run:
    """The run the goals are checked on: its rows and the main nnx implementation."""

    result: dict

    @property
    def rows(self) -> list[dict]:
        return self.result["runs"]

    @property
    def nnx_main(self) -> str:
        return "nnx cuda" if self.result["workload"]["device"] == "cuda" else "nnx numpy"

    def main_row(self, cfg: str) -> dict | None:
        return next((r for r in self.rows if r["config"] == cfg and r["impl"] == self.nnx_main),
                    None)


#: a goal's measure: ``(run, config) -> (value, holds, shown)``, or None where the run
#: did not measure it
Measure = Callable[[_Run, str], "tuple | None"]


def _vs_pytorch(limit: float) -> Measure:
    """The main nnx implementation's time per epoch at most ``limit`` times PyTorch's."""
    def measure(run: _Run, cfg: str):
        row = run.main_row(cfg)
        if not (row and row.get("vs_pytorch")):
            return None
        ref = [r for r in run.rows if r["config"] == cfg and r["impl"].startswith("pytorch")]
        return (row["vs_pytorch"], row["vs_pytorch"] <= limit and row["learned"],
                f"{row['vs_pytorch']:.2f}x{_busy(row, *ref)}")
    return measure


def _gemm_floor(run: _Run, cfg: str):
    row = run.main_row(cfg)
    if not (row and row.get("gemm_fraction")):
        return None
    return (row["gemm_fraction"], row["gemm_fraction"] >= 0.7,
            f"{100 * row['gemm_fraction']:.0f}%{_busy(row)}")


def _no_syncs(run: _Run, cfg: str):
    syncs = [r["syncs_per_step"] for r in run.rows if "syncs_per_step" in r]
    if not syncs:
        return None
    return max(syncs), max(syncs) == 0, f"max {max(syncs)}"


def _memory(key: str) -> Measure:
    """Peak RSS of epoch 5 against epoch 2, from ``result[key]``."""
    def measure(run: _Run, cfg: str):
        mem = run.result.get(key)
        if not (mem and mem["epoch5_vs_epoch2"] is not None):
            return None
        g = mem["epoch5_vs_epoch2"]
        return g, abs(g) <= 0.05, f"{100 * g:+.1f}%"
    return measure


def _doctor_cost(run: _Run, cfg: str):
    """Training time with the doctor against without (scripts/bench_doctor.py)."""
    row = (run.result.get("doctor") or {}).get(cfg)
    if not row:
        return None
    load = row["load_average"]
    return row["cost"], row["cost"] <= 0.05, (
        f"{100 * row['cost']:+.1f}% +- {100 * row['cost_error']:.1f}% (CPU time "
        f"{100 * row['cpu_cost']:+.1f}%, own time {100 * row['own']['all']:.1f}%; load "
        + (f"{load[0]:.1f}-{load[1]:.1f})" if load else "unknown)") + _busy(row))


def _all_learned(run: _Run, cfg: str):
    if not run.rows:
        return None
    bad = [f"{r['impl']} ({r['config']})" for r in run.rows if not r["learned"]]
    return bad, not bad, ("yes" if not bad else
                          "not: " + ", ".join(bad) + " (their times do not count)")


@dataclass(frozen=True)
class Goal:
    """One performance goal: its text (``{impl}``: the main nnx implementation, ``{cfg}``:
    the configuration), how it is measured, and the configurations it is checked on."""

    text: str
    measure: Measure
    configs: tuple = ("",)


#: the performance goals, in the order they are printed
GOALS = (
    Goal("{impl} <= 0.8x PyTorch s/epoch, {cfg}", _vs_pytorch(0.8),
         ("sgdm b128", "sgdm b512", "adam b128", "adam b512")),
    Goal("{impl} >= 70% of the GEMM floor, {cfg}", _gemm_floor, ("sgdm b512", "adam b512")),
    Goal("{impl} <= 1.5x PyTorch s/epoch, {cfg}", _vs_pytorch(1.5), ("cnn adam b128",)),
    Goal("zero host syncs per nnx step", _no_syncs),
    Goal("peak RSS of epoch 5 within 5% of epoch 2", _memory("memory")),
    Goal("peak RSS of epoch 5 within 5% of epoch 2, cnn", _memory("memory_cnn")),
    Goal("doctor <= 5% of training time, {cfg}", _doctor_cost,
         ("digits default", "mnist-shaped")),
    Goal("every implementation learned", _all_learned),
)


def goals(result) -> list[dict]:
    """Check the performance goals (:data:`GOALS`) against this run; prints one line each."""
    run = _Run(result)
    out = []
    print("\ngoals")
    for goal in GOALS:
        for cfg in goal.configs:
            checked = goal.measure(run, cfg)
            if checked is None:
                continue
            value, ok, shown = checked
            text = goal.text.format(impl=run.nnx_main, cfg=cfg)
            out.append({"goal": text, "value": value, "holds": bool(ok)})
            print(f"  [{'ok' if ok else 'NO'}] {text}: {shown}")
    _note_disturbed(run.rows + [{"impl": "doctor", **r}
                                for r in (result.get("doctor") or {}).values()])
    return out


def _note_disturbed(runs) -> None:
    """Name the rows whose medians other processes disturbed (half the epochs or more)."""
    shaky = [f"{r['impl']} ({r['config']})" for r in runs
             if 2 * r.get("disturbed", 0) >= len(r["times"])]
    if shaky:
        print(f"  note: other processes took more than {100 * BUSY:.0f}% of the CPU during half "
              f"or more of the timed epochs of {', '.join(shaky)}; their medians are not to be "
              "trusted: rerun on an idle machine")
