#!/usr/bin/env bash
# Measures the model on this machine, with the default config:
#   1. validation conversion AUC, log loss and plan accuracy after training on
#      `upsell synth --rows 200000`;
#   2. training rows/s on flex and ndarray with 2 threads (2 epochs each);
#   3. `upsell score` rows/s on 1,000,000 rows.
# Prints the machine it ran on and one JSON line per measurement.
#
#   scripts/measure-model.sh [WORKDIR]
#
# WORKDIR (a relative one is taken from the directory the script is run in)
# keeps the data and runs; without it a temporary directory holds them and
# is removed at the end. Set UPSELL to use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [[ -n ${1:-} ]]; then
    work=$(caller_path "$1")
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
cd "$(dirname "$0")/.."
bin=$(upsell_bin)
echo "machine: $(nproc) cores, $(mem_gib) GiB, $(cpu_model)"
rm -rf "$work/synth-200k" "$work/synth-1m" "$work/run-default" "$work/run-flex" "$work/run-ndarray" "$work/scores.parquet"

"$bin" synth --rows 200000 --seed 42 --out "$work/synth-200k" >/dev/null
echo "== default config on upsell synth --rows 200000 (validation metrics of the exported epoch)"
"$bin" train --config "$work/synth-200k/config.toml" --set train.threads=2 --out "$work/run-default" \
    | python3 -c 'import json,sys; s=json.loads(sys.stdin.readlines()[-1]); b=s["best"]; print(json.dumps({"epochs": s["epochs"], "best_epoch": s["best_epoch"], "valid_conversion_auc": b["valid_conversion_auc"], "valid_conversion_log_loss": b["valid_conversion_log_loss"], "valid_plan_accuracy": b["valid_plan_accuracy"], "train_rows_per_sec": s["train_rows_per_sec"]}))'

for backend in flex ndarray; do
    echo "== training rows/s, $backend, 2 threads, default model, batch 1024"
    "$bin" train --config "$work/synth-200k/config.toml" --backend "$backend" \
        --set train.threads=2 --set train.epochs=2 --set train.patience=0 --out "$work/run-$backend" \
        | python3 -c 'import json,sys; s=json.loads(sys.stdin.readlines()[-1]); print(json.dumps({"backend": s["backend"], "train_rows_per_sec": s["train_rows_per_sec"]}))'
done

"$bin" synth --rows 1000000 --seed 7 --out "$work/synth-1m" >/dev/null
echo "== upsell score on 1,000,000 rows (Parquet in, Parquet out)"
"$bin" score --checkpoint "$work/run-default/checkpoint" --input "$work/synth-1m/exposures" \
    --output "$work/scores.parquet"
