#!/usr/bin/env bash
# Decision quality on a synthetic world with known truth: trains upsell once
# per seed, lets `upsell recommend` decide for 50,000 held-out users, and
# scores its offers, beside a logistic regression and LightGBM trained on the
# same rows, against the truth (scripts/decision_quality.py: the metrics, the
# baselines and the truth format). Prints a Markdown table of the mean and sd
# over seeds per policy.
#
#   scripts/decision-quality.sh [ROWS] [SEEDS] [WORLD_SEED] [WORLD]
#
# ROWS (default 200000) training rows, SEEDS (default 3) training seeds
# (1..SEEDS, for upsell and for LightGBM), WORLD_SEED (default 21) the
# synthetic world's seed, WORLD (default "default") its kind (`upsell synth
# --world`: README, "Worlds"). The world has ROWS + 50,000 rows in files of 50,000: the
# first file is held out, the others train (rows are independent users, so
# the first file is as good a test set as any; it is the one that is always
# full).
#
# Environment:
#   UPSELL                   a prebuilt binary (else `cargo build --release`)
#   UPSELL_DQ_SET            extra overrides for `upsell train`, separated by
#                            spaces (so none inside a value: model.hidden=[256,128]):
#                            "model.plan_uses_offer=true train.patience=5"
#   UPSELL_DQ_CONTACT_COST   value deducted per offer made (default 0), for
#                            upsell's policy and the metrics alike; several,
#                            separated by spaces ("0.15 0.5"), give a table
#                            each from the same trained models
#   UPSELL_DQ_LGBM_SEEDS     LightGBM seeds (default SEEDS)
#   UPSELL_DQ_OUT            write the Markdown here (and the per-run records
#                            beside it, as .json) instead of to stdout
#   UPSELL_DQ_VENV           the Python environment, made when missing
#                            (default ~/.cache/upsell/dq-venv)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rows=${1:-200000}
seeds=${2:-3}
world_seed=${3:-21}
world_kind=${4:-default}
held_out=50000
read -r -a costs <<<"${UPSELL_DQ_CONTACT_COST:-0}"
lgbm_seeds=${UPSELL_DQ_LGBM_SEEDS:-$seeds}
read -r -a extra <<<"${UPSELL_DQ_SET:-}"
out=${UPSELL_DQ_OUT:+$(caller_path "$UPSELL_DQ_OUT")}
python=$(bench_python)
cd "$(dirname "$0")/.."

upsell=$(upsell_bin)
machine="$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

world=$work/world
"$upsell" synth --rows $((rows + held_out)) --rows-per-file "$held_out" --seed "$world_seed" \
    --world "$world_kind" --out "$world" >/dev/null
test_file=$world/exposures/part-00000.parquet
mkdir "$work/train"
for file in "$world"/exposures/part-*.parquet; do
    [[ $file == "$test_file" ]] || ln -s "$file" "$work/train/"
done

overrides=(--set train.threads=2)
for kv in "${extra[@]}"; do
    overrides+=(--set "$kv")
done
decisions=()
scores=()
for seed in $(seq "$seeds"); do
    echo "upsell seed $seed: training" >&2
    summary=$("$upsell" train --config "$world/config.toml" --data "$work/train" --out "$work/run-$seed" \
        --set "seed=$seed" "${overrides[@]}" | tail -n 1)
    checkpoint=$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["checkpoint"])' "$summary")
    for cost in "${costs[@]}"; do
        "$upsell" recommend --checkpoint "$checkpoint" --input "$test_file" \
            --output "$work/decisions-$cost-$seed.parquet" --set "policy.contact_cost=$cost" >/dev/null
    done
    "$upsell" score --checkpoint "$checkpoint" --input "$test_file" --output "$work/scores-$seed.parquet" >/dev/null
    scores+=("$work/scores-$seed.parquet")
done
# Cost-major, as decision_quality.py reads them.
for cost in "${costs[@]}"; do
    for seed in $(seq "$seeds"); do
        decisions+=("$work/decisions-$cost-$seed.parquet")
    done
done

"$python" scripts/decision_quality.py --world "$world" --test-file 0 \
    --upsell "${decisions[@]}" --upsell-scores "${scores[@]}" --upsell-seeds $(seq "$seeds") \
    --seeds $(seq "$lgbm_seeds") --contact-cost "${costs[@]}" --out "$work/results.json" >"$work/table.md"

{
    echo "# Decision quality: upsell against baselines on a synthetic world"
    echo
    # With $UPSELL set the command line says so, without the binary's path.
    echo "\`${UPSELL:+UPSELL=<prebuilt upsell> }${UPSELL_DQ_SET:+UPSELL_DQ_SET=\"$UPSELL_DQ_SET\" }${UPSELL_DQ_CONTACT_COST:+UPSELL_DQ_CONTACT_COST=\"$UPSELL_DQ_CONTACT_COST\" }${UPSELL_DQ_LGBM_SEEDS:+UPSELL_DQ_LGBM_SEEDS=$lgbm_seeds }scripts/decision-quality.sh $rows $seeds $world_seed $world_kind\`"
    echo
    cat "$work/table.md"
    echo
    echo "World \`$world_kind\`, seed $world_seed; $rows training rows, $held_out held out; upsell seeds 1..$seeds, LightGBM seeds 1..$lgbm_seeds" \
        "(mean ± sd over seeds). $machine."
} >"$work/report.md"
if [[ -n $out ]]; then
    mkdir -p "$(dirname "$out")"
    cp "$work/results.json" "${out%.md}.json"
    mv "$work/report.md" "$out"
    echo "wrote $out and ${out%.md}.json" >&2
else
    cat "$work/report.md"
fi
