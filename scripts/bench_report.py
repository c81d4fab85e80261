"""The rows, table and goal check of scripts/bench.py."""

from __future__ import annotations

import statistics

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
    doctor = [r for r in rows if r["impl"].endswith("+ doctor")]
    if doctor:
        base = next(r for r in rows if r["impl"] == doctor[0]["impl"][:-len(" + doctor")])
        overhead = doctor[0]["s_per_epoch"] / base["s_per_epoch"] - 1
        base["doctor_overhead"] = overhead
        print(f"{'':<11} doctor monitor overhead: {100 * overhead:+.1f}% of epoch time")


def goals(result) -> list[dict]:
    """Check the performance goals against this run; prints one line each."""
    runs = result["runs"]
    nnx_main = "nnx cuda" if result["workload"]["device"] == "cuda" else "nnx numpy"
    out = []

    def goal(text, value, ok, shown):
        out.append({"goal": text, "value": value, "holds": bool(ok)})
        print(f"  [{'ok' if ok else 'NO'}] {text}: {shown}")

    def busy(*rows):
        return " (measured while other processes were busy)" if any(
            2 * r.get("disturbed", 0) >= len(r["times"]) for r in rows) else ""

    print("\ngoals")
    for cfg in ("sgdm b128", "sgdm b512", "adam b128", "adam b512"):
        rows = [r for r in runs if r["config"] == cfg]
        row = next((r for r in rows if r["impl"] == nnx_main), None)
        if row and row.get("vs_pytorch"):
            ref = [r for r in rows if r["impl"].startswith("pytorch")]
            goal(f"{nnx_main} <= 0.8x PyTorch s/epoch, {cfg}", row["vs_pytorch"],
                 row["vs_pytorch"] <= 0.8 and row["learned"],
                 f"{row['vs_pytorch']:.2f}x{busy(row, *ref)}")
    for cfg in ("sgdm b512", "adam b512"):
        row = next((r for r in runs if r["config"] == cfg and r["impl"] == nnx_main), None)
        if row and row.get("gemm_fraction"):
            goal(f"{nnx_main} >= 70% of the GEMM floor, {cfg}", row["gemm_fraction"],
                 row["gemm_fraction"] >= 0.7, f"{100 * row['gemm_fraction']:.0f}%{busy(row)}")
    cnn = [r for r in runs if r["config"] == "cnn adam b128"]
    row = next((r for r in cnn if r["impl"] == nnx_main), None)
    if row and row.get("vs_pytorch"):
        ref = [r for r in cnn if r["impl"].startswith("pytorch")]
        goal(f"{nnx_main} <= 1.5x PyTorch s/epoch, cnn adam b128", row["vs_pytorch"],
             row["vs_pytorch"] <= 1.5 and row["learned"],
             f"{row['vs_pytorch']:.2f}x{busy(row, *ref)}")
    syncs = [r["syncs_per_step"] for r in runs if "syncs_per_step" in r]
    if syncs:
        goal("zero host syncs per nnx step", max(syncs), max(syncs) == 0, f"max {max(syncs)}")
    for key, what in (("memory", ""), ("memory_cnn", ", cnn")):
        mem = result.get(key)
        if mem and mem["epoch5_vs_epoch2"] is not None:
            g = mem["epoch5_vs_epoch2"]
            goal(f"peak RSS of epoch 5 within 5% of epoch 2{what}", g, abs(g) <= 0.05,
                 f"{100 * g:+.1f}%")
    base = next((r for r in runs if "doctor_overhead" in r), None)
    if base:
        over = base["doctor_overhead"]
        doctor = [r for r in runs if r["config"] == base["config"] and "+ doctor" in r["impl"]]
        goal("doctor monitor overhead <= 10% of step time", over, over <= 0.10,
             f"{100 * over:+.1f}%{busy(base, *doctor)}")
    bad = [f"{r['impl']} ({r['config']})" for r in runs if not r["learned"]]
    goal("every implementation learned", bad, not bad, "yes" if not bad else
         "not: " + ", ".join(bad) + " (their times do not count)")
    shaky = [f"{r['impl']} ({r['config']})" for r in runs
             if 2 * r.get("disturbed", 0) >= len(r["times"])]
    if shaky:
        print(f"  note: other processes took more than {100 * BUSY:.0f}% of the CPU during half "
              f"or more of the timed epochs of {', '.join(shaky)}; their medians are not to be "
              "trusted: rerun on an idle machine")
    return out
