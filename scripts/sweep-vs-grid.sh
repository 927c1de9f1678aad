#!/usr/bin/env bash
# Does a search with a third of the trials find a config as good as the full
# grid's best? On a synthetic world with known truth: `upsell sweep` runs a
# 3x3x3 grid (27 trials) of learning rate, dropout and embedding size, then
# searches (TPE by default) run 9 trials over the same ranges (as
# continuous ranges) once per sampler seed (UPSELL_SWEEP_SEARCH picks the
# sampler and pruner). Each sweep's best trial (lowest validation loss, the
# sweep metric) is then judged on held-out users against the truth: the
# share of achievable lift (`upsell eval --truth`) of its config, trained
# with three seeds.
# Prints a Markdown table: the grid's best, each search's best, and the
# searches' median.
#
#   scripts/sweep-vs-grid.sh [ROWS] [SEEDS] [WORLD_SEED] [WORLD]
#
# ROWS (default 20000) training rows, SEEDS (default 5) sampler seeds,
# WORLD_SEED (default 21), WORLD (default "default"). 20,000 held-out rows
# are added for the decisions. Environment: UPSELL (a prebuilt binary),
# UPSELL_SWEEP_OUT (keep the sweeps here instead of a temporary directory;
# a rerun reuses the world and every finished trial), UPSELL_SWEEP_SEARCH
# (the search's own arguments, default "--sampler tpe"), UPSELL_SWEEP_TRIALS
# (trials per search, default 9: a third of the grid), UPSELL_SWEEP_RETRAIN
# (trainings of each best config that its share of lift averages, default 3).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rows=${1:-20000}
seeds=${2:-5}
world_seed=${3:-21}
world_kind=${4:-default}
held_out=20000
keep=${UPSELL_SWEEP_OUT:+$(caller_path "$UPSELL_SWEEP_OUT")}
read -r -a search_args <<<"${UPSELL_SWEEP_SEARCH:---sampler tpe}"
retrain=${UPSELL_SWEEP_RETRAIN:-3}
trials=${UPSELL_SWEEP_TRIALS:-9}
variant=$(printf '%s' "${search_args[*]}" | tr -c 'a-zA-Z0-9:' '-')
[[ $trials == 9 ]] || variant+="-t$trials"
cd "$(dirname "$0")/.."
upsell=$(upsell_bin)
machine="$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)"
if [[ -n $keep ]]; then
    mkdir -p "$keep"
    work=$keep
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

world=$work/world
if [[ ! -d $world ]]; then
    "$upsell" synth --rows $((rows + held_out)) --rows-per-file "$held_out" --seed "$world_seed" \
        --world "$world_kind" --out "$world" >/dev/null
fi
test_file=$world/exposures/part-00000.parquet
truth_file=$world/truth/part-00000.parquet
mkdir -p "$work/train"
for file in "$world"/exposures/part-*.parquet; do
    [[ $file == "$test_file" ]] || ln -sf "$file" "$work/train/"
done

common=(sweep --config "$world/config.toml" --data "$work/train" --set train.threads=2
    --metric best.valid_loss)

# epochs DIR: the epochs a sweep trained, all trials together.
epochs() { cat "$1"/trials/*/metrics.jsonl | wc -l; }

# judge SUMMARY: "valid_loss share_of_lift overrides" of a sweep's best
# trial, the share being the mean over RETRAIN trainings of the best config
# with seeds 1..RETRAIN (one training's share varies by a few hundredths
# with its seed alone, which would decide a comparison of single runs).
judge() {
    local summary=$1 loss overrides sets=() shares=() seed run checkpoint
    loss=$(jq -r .best.metric <<<"$summary")
    overrides=$(jq -r '.best.overrides | to_entries | map("\(.key)=\(.value)") | join(" ")' <<<"$summary")
    for kv in $overrides; do
        sets+=(--set "$kv")
    done
    for seed in $(seq "$retrain"); do
        run=$work/retrain/$(printf '%s' "$overrides" | tr -c 'a-zA-Z0-9.=' '_')-seed-$seed
        if [[ ! -d $run/checkpoint ]]; then
            rm -rf "$run"
            "$upsell" train --config "$world/config.toml" --data "$work/train" --out "$run" \
                --set train.threads=2 --set "seed=$seed" "${sets[@]}" >/dev/null
        fi
        shares+=("$("$upsell" eval --checkpoint "$run/checkpoint" --data "$test_file" --truth "$truth_file" |
            jq -r .decisions.share_of_lift)")
    done
    printf '%s %s %s\n' "$loss" "$(printf '%s\n' "${shares[@]}" | awk '{ s += $1 } END { print s / NR }')" "$overrides"
}

echo "grid: 27 trials" >&2
grid=$("$upsell" "${common[@]}" --out "$work/grid" \
    --grid train.lr=0.0005,0.002,0.008 --grid model.dropout=0,0.15,0.3 \
    --grid model.embedding_dim=8,16,32 | tail -n 1)
judged=$(judge "$grid")
read -r grid_loss grid_share grid_overrides <<<"$judged"

searches=()
for seed in $(seq "$seeds"); do
    echo "search seed $seed: $trials trials, ${search_args[*]}" >&2
    summary=$("$upsell" "${common[@]}" --out "$work/search$variant-$seed" --trials "$trials" --seed "$seed" "${search_args[@]}" \
        --grid 'train.lr=loguniform(0.0005,0.008)' --grid 'model.dropout=uniform(0,0.3)' \
        --grid model.embedding_dim=8,16,32 | tail -n 1)
    judged=$(judge "$summary")
    read -r loss share overrides <<<"$judged"
    pruned=$(jq -r .pruned <<<"$summary")
    searches+=("$seed $loss $share $pruned $(epochs "$work/search$variant-$seed") $overrides")
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
median_loss=$(printf '%s\n' "${searches[@]}" | awk '{ print $2 }' | median)
median_share=$(printf '%s\n' "${searches[@]}" | awk '{ print $3 }' | median)

echo "# $trials trials (\`${search_args[*]}\`) against the full grid of 27"
echo
echo "World \`$world_kind\` (seed $world_seed), $rows training rows, $held_out held-out users; sweep metric best.valid_loss (lower is better); share of lift: \`upsell eval --truth\` on the held-out users of the best config trained with seeds 1..$retrain, the mean (higher is better). Machine: $machine."
echo
echo "| sweep | trials | pruned | epochs trained | best valid_loss | share of lift | best config |"
echo "|---|---|---|---|---|---|---|"
printf '| grid (3x3x3) | 27 | 0 | %s | %.5f | %.3f | %s |\n' "$(epochs "$work/grid")" "$grid_loss" "$grid_share" "$grid_overrides"
for line in "${searches[@]}"; do
    read -r seed loss share pruned trained overrides <<<"$line"
    printf '| search, seed %s | %s | %s | %s | %.5f | %.3f | %s |\n' "$seed" "$trials" "$pruned" "$trained" "$loss" "$share" "$overrides"
done
printf '| **search, median of %s seeds** | %s | | | **%.5f** | **%.3f** | |\n' "$seeds" "$trials" "$median_loss" "$median_share"
echo
awk -v m="$median_loss" -v g="$grid_loss" -v ms="$median_share" -v gs="$grid_share" 'BEGIN {
    printf "Median search best against the grid best: valid_loss %s (%+.5f), share of lift %s (%+.3f).\n",
        (m <= g ? "as good or better" : "worse"), m - g, (ms >= gs ? "as good or better" : "worse"), ms - gs
}'
