#!/usr/bin/env bash
# Rebuilds the committed golden checkpoint, checkpoints/demo: a small model
# trained on built-in synthetic data, eight fixed rows (rows.csv) and their
# scores (expected.csv). Run it only when a checkpoint format change is
# intended; the tests compare the stored scores with fresh ones.
# Needs Python with pandas and pyarrow (pip install pandas pyarrow) to turn
# the Parquet rows into CSV. Set UPSELL to use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
bin=$(upsell_bin)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" train --out "$work/run" \
    --set train.synthetic_rows=20000 --set train.epochs=2 --set train.batch_size=256 \
    --set model.hidden='[32, 16]' --set model.tower='[16]' --set model.embedding_dim=8 \
    --set model.offer_dim=8 --set 'columns.hashed.region_id=64' >/dev/null
"$bin" synth --rows 8 --seed 99 --out "$work/rows" >/dev/null

rm -rf checkpoints/demo
cp -r "$work/run/checkpoint" checkpoints/demo
python3 - "$work/rows/exposures" checkpoints/demo/rows.csv <<'PY'
import sys, glob
import pandas as pd
frames = [pd.read_parquet(p) for p in sorted(glob.glob(sys.argv[1] + "/*.parquet"))]
pd.concat(frames).to_csv(sys.argv[2], index=False)
PY
"$bin" score --checkpoint checkpoints/demo --input checkpoints/demo/rows.csv \
    --output checkpoints/demo/expected.csv --force >/dev/null
du -sh checkpoints/demo
