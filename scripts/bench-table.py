#!/usr/bin/env python3
"""Turns `upsell bench` JSON lines (stdin) into a Markdown table (stdout).

Usage: upsell bench ... | scripts/bench-table.py "machine description" [REFERENCE_GFLOPS]

With a reference rate (numpy/OpenBLAS on the same machine, from
scripts/numpy-matmul.py), a second share column sets each figure against it.
"""
import json
import sys

machine = sys.argv[1] if len(sys.argv) > 1 else "unknown machine"
reference = float(sys.argv[2]) * 1e9 if len(sys.argv) > 2 and sys.argv[2] else None
rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]


def number(value, unit):
    if unit == "GFLOP/s":
        return f"{value:,.1f}"
    if unit.startswith("µs"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def detail(row):
    d = row["detail"]
    parts = []
    if "train_flops_per_row" in d:
        parts.append(f"{d['train_flops_per_row'] / 1e3:,.0f} kFLOP/row (fwd+bwd)")
    if "score_flops_per_row" in d:
        parts.append(f"{d['score_flops_per_row'] / 1e3:,.0f} kFLOP/row")
    if "p50_us" in d:
        parts.append(f"p50 {d['p50_us']:.1f} µs, p90 {d['p90_us']:.1f} µs")
    if "ratio_to_model" in d:
        parts.append(
            f"{d['seconds']:.2f} s; {d['ratio_to_model']:.2f}x the model's own batch-4096 time"
        )
    if "load_seconds" in d:
        parts.append(
            f"load {d['load_seconds']:.2f} s, fit {d['fit_seconds']:.2f} s, "
            f"transform {d['transform_seconds']:.2f} s"
        )
    return "; ".join(parts)


def flops_per_row(row):
    d = row["detail"]
    if row["bench"] == "train":
        return d.get("train_flops_per_row")
    if row["bench"] == "score":
        return d.get("score_flops_per_row")
    return None


print(f"Machine: {machine}\n")
if reference:
    print(f"Reference: numpy (OpenBLAS) f32 2048x2048x2048 at {reference / 1e9:,.1f} GFLOP/s.\n")
extra = " share of numpy's matmul |" if reference else ""
print(f"| bench | backend | case | result | share of burn's best matmul |{extra} notes |")
print("|---|---|---|---|---|" + ("---|" if reference else "") + "---|")
for row in rows:
    share = row.get("share_of_matmul")
    share = "" if share is None else f"{100 * share:.1f}%"
    cells = [row["bench"], row["backend"], row["case"],
             f"{number(row['value'], row['unit'])} {row['unit']}", share]
    if reference:
        flops = flops_per_row(row)
        cells.append(
            f"{100 * row['value'] * flops / reference:.1f}%"
            if flops and row["backend"] != "wgpu" else ""
        )
    cells.append(detail(row))
    print("| " + " | ".join(cells) + " |")
