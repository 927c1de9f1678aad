#!/usr/bin/env bash
# Data-parallel training on one machine: the default model trained for one
# epoch on the same rows with one replica and with several
# (train.devices), printing rows/s and the validation loss. Prints a
# Markdown table with the machine it ran on.
#
#   scripts/data-parallel.sh [ROWS] [DEVICES...]
#
# ROWS (default 1000000) train; 200,000 more are held out. DEVICES are
# train.devices values (TOML arrays) to compare with the single device;
# default: '["flex", "flex"]' '["flex", "ndarray"]'. Set UPSELL to use
# another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

rows=${1:-1000000}
shift || true
variants=("[]" "$@")
if [[ $# -eq 0 ]]; then
    variants+=('["flex", "flex"]' '["flex", "ndarray"]')
fi
upsell=$(upsell_bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$upsell" synth --rows $((rows + 200000)) --rows-per-file "$rows" --seed 3 --out "$work/synth" >/dev/null

echo "| train.devices | training rows/s | validation loss | conversion AUC |"
echo "|---|---|---|---|"
i=0
for devices in "${variants[@]}"; do
    i=$((i + 1))
    summary=$("$upsell" train --config "$work/synth/config.toml" \
        --data "$work/synth/exposures/part-00000.parquet" \
        --set "data.valid=\"$work/synth/exposures/part-00001.parquet\"" \
        --set train.epochs=1 --set "train.devices=$devices" --out "$work/run-$i" | tail -n 1)
    python3 - "$devices" "$summary" <<'PY'
import json, sys
devices, s = sys.argv[1], json.loads(sys.argv[2])
b = s["best"]
print(f"| `{devices}` | {s['train_rows_per_sec']:,.0f} | {b['valid_loss']:.4f} | {b['valid_conversion_auc']:.4f} |")
PY
done
echo
echo "$rows training rows, one epoch, default model; $(cpu_cores)."
