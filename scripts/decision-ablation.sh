#!/usr/bin/env bash
# Compares upsell configs by the decisions they make, on every synthetic
# world, with upsell's own `eval --truth` (no Python, no baselines; fast
# enough for tuning). Per world: a log of 250,000 rows (UPSELL_DQ_LOG_ROWS)
# of seed WORLD_SEED in files of 50,000 (cached), training on every file but
# the last, the recommendations for the last scored against its truth. Prints one line per
# run and, per world, the mean and sd over training seeds 1..SEEDS of the
# share of achievable lift and of the conversion AUC.
#
#   scripts/decision-ablation.sh SEEDS [--set key=value]...
#
# Environment: UPSELL (a prebuilt binary), UPSELL_DQ_ROWS (train on only the
# first ROWS rows of the first file, at most 50,000; default: every file but
# the last), UPSELL_DQ_LOG_ROWS (the log's rows, a multiple of 50,000;
# default 250000), UPSELL_DQ_WORLD_SEED (default 42),
# UPSELL_DQ_WORLDS (default every world but `holdout`, which is kept out of
# tuning), UPSELL_DQ_CACHE (where the logs are kept; default
# ~/.cache/upsell/worlds).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

seeds=${1:?usage: scripts/decision-ablation.sh SEEDS [--set key=value]...}
shift
world_seed=${UPSELL_DQ_WORLD_SEED:-42}
read -r -a worlds <<<"${UPSELL_DQ_WORLDS:-default weak_interactions noisy switchers rare regional price_sensitive}"
cache=$(user_path "${UPSELL_DQ_CACHE:-}" "$HOME/.cache/upsell/worlds")
upsell=$(upsell_bin)
rows=${UPSELL_DQ_ROWS:-}
if [[ -n $rows ]]; then
    python=$(bench_python)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log_rows=${UPSELL_DQ_LOG_ROWS:-250000}
if ((log_rows < 100000 || log_rows % 50000)); then
    echo "UPSELL_DQ_LOG_ROWS=$log_rows: a multiple of 50000, at least 100000 (a file to train on and one to score)" >&2
    exit 2
fi
last=$(printf 'part-%05d.parquet' $((log_rows / 50000 - 1)))

for world in "${worlds[@]}"; do
    log=$cache/$world-$world_seed-$log_rows
    if [[ ! -d $log ]]; then
        "$upsell" synth --rows "$log_rows" --rows-per-file 50000 --seed "$world_seed" \
            --world "$world" --out "$log" >/dev/null
    fi
    # Every file but the last, as a directory of links.
    train=$work/train-$world
    mkdir -p "$train"
    for file in "$log"/exposures/part-*.parquet; do
        [[ $(basename "$file") == "$last" ]] || ln -sf "$file" "$train/"
    done
    if [[ -n $rows ]]; then
        train=$log/head-$rows.parquet
        if [[ ! -f $train ]]; then
            "$python" -c '
import sys, pyarrow.parquet as pq
source, rows, out = sys.argv[1:]
table = pq.read_table(source)
assert int(rows) <= table.num_rows, f"UPSELL_DQ_ROWS={rows}: the first file has {table.num_rows} rows"
pq.write_table(table.slice(0, int(rows)), out + ".tmp")' "$log/exposures/part-00000.parquet" "$rows" "$train"
            mv "$train.tmp" "$train"
        fi
    fi
    for seed in $(seq "$seeds"); do
        summary=$("$upsell" train --config "$log/config.toml" --data "$train" \
            --out "$work/$world-$seed" --set train.threads=2 --set "seed=$seed" "$@" | tail -n 1)
        "$upsell" eval --checkpoint "$work/$world-$seed/checkpoint" \
            --data "$log/exposures/$last" --truth "$log/truth/$last" |
            python3 -c '
import json, sys
world, seed, summary = sys.argv[1:]
train = json.loads(summary)
d = json.load(sys.stdin)
q = d["decisions"]
print(world, seed, "share=%.4f" % q["share_of_lift"], "context_share=%.4f" % q["context_share_of_lift"],
      "auc=%.4f" % d["conversion"]["auc"],
      "best_auc=%.4f" % q["best_achievable_auc"], "ece=%.4f" % d["conversion"]["ece"],
      "epochs=%d" % train["epochs"], "seconds=%.1f" % train["seconds"])' "$world" "$seed" "$summary"
    done
done | tee "$work/runs.txt"

python3 - "$work/runs.txt" <<'PY'
import collections, re, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    fields = dict(f.split("=") for f in line.split()[2:])
    runs[line.split()[0]].append(fields)
def stat(values):
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"
shares = []
for world, rows in runs.items():
    shares += [float(r["share"]) for r in rows]
    print(f"{world:18} share {stat(r['share'] for r in rows)}  auc {stat(r['auc'] for r in rows)}"
          f"  best auc {rows[0]['best_auc']}")
print(f"{'every world':18} share {statistics.fmean(shares):.3f}")
PY
