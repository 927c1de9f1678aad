#!/usr/bin/env python3
"""Turns `upsell bench` JSON lines (stdin) into a Markdown table (stdout).

Usage: upsell bench ... | scripts/bench-table.py "machine description"
"""
import json
import sys

machine = sys.argv[1] if len(sys.argv) > 1 else "unknown machine"
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


print(f"Machine: {machine}\n")
print("| bench | backend | case | result | share of the matmul rate | notes |")
print("|---|---|---|---|---|---|")
for row in rows:
    share = row.get("share_of_matmul")
    share = "" if share is None else f"{100 * share:.1f}%"
    print(
        f"| {row['bench']} | {row['backend']} | {row['case']} | "
        f"{number(row['value'], row['unit'])} {row['unit']} | {share} | {detail(row)} |"
    )
