#!/usr/bin/env bash
# Shared-bottom against MMoE, and fixed against learned (uncertainty) task
# weights, on one synthetic world: trains each variant with the same seed on
# the same rows, evaluates it on held-out rows of the same world, and prints
# a Markdown table with the machine it ran on.
#
#   scripts/compare-sharing.sh [ROWS] [extra train args...]
#
# ROWS (default 250000) are split into a training file (the first 80%) and a
# held-out file (the rest). Every variant uses layer normalisation
# (model.layer_norm = true): without it the experts train markedly slower
# than one shared encoder. The script runs from the repository root, so
# relative paths in the extra train args are taken from there. Set UPSELL to
# use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

rows=${1:-250000}
shift || true
upsell=$(upsell_bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

train_rows=$((rows * 4 / 5))
"$upsell" synth --rows "$rows" --rows-per-file "$train_rows" --seed 21 --out "$work/synth" >/dev/null
train=$work/synth/exposures/part-00000.parquet
held_out=$work/synth/exposures/part-00001.parquet

variants=(
    "shared-bottom, fixed weights|model.sharing=\"shared_bottom\"|train.task_weighting=\"fixed\""
    "shared-bottom, uncertainty weights|model.sharing=\"shared_bottom\"|train.task_weighting=\"uncertainty\""
    "MMoE (4 experts), fixed weights|model.sharing=\"mmoe\"|train.task_weighting=\"fixed\""
    "MMoE (4 experts), uncertainty weights|model.sharing=\"mmoe\"|train.task_weighting=\"uncertainty\""
)

echo "| variant | held-out conversion AUC | conversion log loss | plan accuracy | plan log loss | epochs | train s |"
echo "|---|---|---|---|---|---|---|"
i=0
for variant in "${variants[@]}"; do
    IFS='|' read -r name sharing weighting <<<"$variant"
    i=$((i + 1))
    run=$work/run-$i
    summary=$("$upsell" train --config "$work/synth/config.toml" --data "$train" \
        --set "$sharing" --set "$weighting" --set model.experts=4 --set model.layer_norm=true \
        "$@" --out "$run" | tail -n 1)
    metrics=$("$upsell" eval --checkpoint "$run/checkpoint" --data "$held_out" | tail -n 1)
    python3 - "$name" "$summary" "$metrics" <<'EOF'
import json, sys
name, summary, metrics = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
c, p = metrics["conversion"], metrics["plan"]
print(f"| {name} | {c['auc']:.4f} | {c['log_loss']:.4f} | {p['accuracy']:.4f} | "
      f"{p['log_loss']:.4f} | {summary['epochs']} | {summary['seconds']:.0f} |")
EOF
done
echo
echo "$rows synthetic rows (seed 21), $train_rows to train, $((rows - train_rows)) held out;" \
    "$(cpu_cores)."
