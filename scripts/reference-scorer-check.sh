#!/usr/bin/env bash
# Checks docs/checkpoint.md against the Rust scorer: the manifest of
# checkpoints/demo validates against docs/checkpoint.schema.json, and the
# Python reference scorer (scripts/reference_scorer.py) reproduces `upsell
# score` to 1e-5 on the demo checkpoint and on small checkpoints that use
# what the demo does not (one member, GELU, layer norm, the wide part on
# the ids,
# per-product and isotonic calibration, a mixture of experts, one shared
# conversion output, no numeric bins). CI runs it.
#
#   scripts/reference-scorer-check.sh [UPSELL_BINARY]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$repo/target}/release/upsell}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check numpy xxhash jsonschema
py="$work/venv/bin/python"
reference="$repo/scripts/reference_scorer.py"
rows="$repo/checkpoints/demo/rows.csv"

validate() {
    "$py" - "$repo/docs/checkpoint.schema.json" "$1/manifest.json" <<'PY'
import json, sys, jsonschema
schema, manifest = (json.load(open(p)) for p in sys.argv[1:])
jsonschema.validate(manifest, schema)
PY
}
validate "$repo/checkpoints/demo"
echo -n "demo: "
"$py" "$reference" "$repo/checkpoints/demo" "$rows" --expected "$repo/checkpoints/demo/expected.csv"

# Trained on the built-in synthetic data, whose columns are those of rows.csv.
variants=(
    "one-member-gelu-norm-wide:model.members=1 model.activation=\"gelu\" model.layer_norm=true model.wide=true train.calibration=\"product_temperature\""
    "mmoe-isotonic-shared-output:model.sharing=\"mmoe\" model.product_heads=false model.plan_uses_offer=false preprocess.numeric_bins=0 train.calibration=\"isotonic\""
)
for variant in "${variants[@]}"; do
    name=${variant%%:*}
    sets=()
    for s in ${variant#*:}; do sets+=(--set "$s"); done
    "$bin" train --out "$work/$name" --set train.synthetic_rows=6000 --set train.epochs=2 \
        --set train.threads=2 "${sets[@]}" >/dev/null
    validate "$work/$name/checkpoint"
    "$bin" score --checkpoint "$work/$name/checkpoint" --input "$rows" --output "$work/$name.csv" >/dev/null
    echo -n "$name: "
    "$py" "$reference" "$work/$name/checkpoint" "$rows" --expected "$work/$name.csv"
done

# A no-offer arm (a world with a holdout), scored on rows that include
# no-offer rows: the decisions of its own policy, logged as exposures.
"$bin" synth --rows 6000 --seed 3 --world incremental --out "$work/incremental" >/dev/null
"$bin" train --config "$work/incremental/config.toml" --out "$work/no-offer-arm" --set train.epochs=2 \
    --set train.threads=2 --set train.calibration=\"product_temperature\" >/dev/null
validate "$work/no-offer-arm/checkpoint"
"$bin" recommend --checkpoint "$work/no-offer-arm/checkpoint" --input "$work/incremental/exposures" \
    --output "$work/arm-decisions.csv" --exposures "$work/arm-rows.csv" --set policy.holdout=0.3 >/dev/null
"$bin" score --checkpoint "$work/no-offer-arm/checkpoint" --input "$work/arm-rows.csv" \
    --output "$work/no-offer-arm.csv" >/dev/null
echo -n "no-offer-arm: "
"$py" "$reference" "$work/no-offer-arm/checkpoint" "$work/arm-rows.csv" --expected "$work/no-offer-arm.csv"
