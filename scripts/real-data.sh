#!/usr/bin/env bash
# upsell beside logistic regression and LightGBM on the four public data sets
# in tests/data (churn and caravan: held-out AUC; the catsup and cracker
# brand-choice panels: held-out plan accuracy), on SEEDS seeded 80/20 splits
# each, upsell with its default config (scripts/real_data.py says how each
# model is fitted). Writes benches/real-data.md and benches/real-data.json.
#
#   scripts/real-data.sh [SEEDS]
#
# Environment: UPSELL (a prebuilt binary, else `cargo build --release`),
# UPSELL_SET (space-separated key=value overrides of upsell's config, for
# ablations; the table names them),
# UPSELL_DQ_VENV (the Python environment, made when missing; default
# ~/.cache/upsell/dq-venv).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

seeds=${1:-3}
upsell=$(upsell_bin)
python=$(bench_python)
cd "$(dirname "$0")/.."
machine="$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)"
started=$(date +%s)
"$python" scripts/real_data.py "$upsell" "$seeds" benches/real-data.json
minutes=$(( ($(date +%s) - started + 59) / 60 ))

"$python" - "$seeds" "$minutes" "$machine" "${UPSELL_SET:-}" >benches/real-data.md <<'PY'
import json, statistics, sys
seeds, minutes, machine, overrides = sys.argv[1:]
records = json.load(open("benches/real-data.json"))
print("# upsell on real data\n")
prefix = f'UPSELL_SET="{overrides}" ' if overrides else ""
print(f"`{prefix}scripts/real-data.sh {seeds}` ({minutes} minutes on {machine}; every run in "
      "[real-data.json](real-data.json)).\n")
config = f"its default config with {overrides}" if overrides else "its default config"
print("Held-out AUC (binary sets) or plan accuracy (brand choice) on seeded 80/20 splits "
      f"(seeds 1..{seeds}), mean ± sd over the splits; upsell with {config}, given "
      "only the columns. Data: `mlc_churn` from the modeldata R package, `caravan` (CoIL 2000) "
      "from ISLR, `catsup` and `cracker` from Ecdat.\n")
print("| data set | rows | metric | upsell | logistic regression | LightGBM | upsell ≥ both, splits |")
print("|---|---:|---|---:|---:|---:|---:|")
for name in dict.fromkeys(r["dataset"] for r in records):
    runs = [r for r in records if r["dataset"] == name]
    def stat(key):
        values = [r[key] for r in runs]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.3f} ± {sd:.3f}"
    wins = sum(r["upsell"] >= max(r["logistic"], r["lightgbm"]) for r in runs)
    rows = runs[0]["train_rows"] + runs[0]["test_rows"]
    print(f"| `{name}` | {rows:,} | {runs[0]['metric']} | {stat('upsell')} | {stat('logistic')} | "
          f"{stat('lightgbm')} | {wins} of {len(runs)} |")
PY
cat benches/real-data.md
