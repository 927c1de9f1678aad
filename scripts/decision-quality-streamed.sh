#!/usr/bin/env bash
# The large end of the decision-quality tiers: upsell's default config
# trained out of core (data.stream = true) on MILLIONS million rows of a
# synthetic world, its decisions on a million held-out users scored against
# the world's truth by `upsell eval --truth`. upsell alone: the Python
# baselines do not fit this size in memory on the reference machine.
#
#   scripts/decision-quality-streamed.sh [MILLIONS] [WORLD] [WORLD_SEED]   # 20 default 21
#
# The log is `upsell synth` in files of a million rows, with truth for the
# first only: part-00000 is held out, part-00001 is the validation file, the
# rest is training data. It is kept in $UPSELL_SCALE_DIR (default
# /var/tmp/upsell-scale; about 150 MB per million rows, 1.5 GB for the truth
# file) and reused. Prints a Markdown table with the machine it ran
# on, to UPSELL_DQ_OUT when set. Set UPSELL to use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(user_path "${UPSELL_SCALE_DIR:-}" /var/tmp/upsell-scale)
out=${UPSELL_DQ_OUT:+$(caller_path "$UPSELL_DQ_OUT")}
cd "$(dirname "$0")/.."

millions=${1:-20}
world_kind=${2:-default}
world_seed=${3:-21}
upsell=$(upsell_bin)
machine="$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)"

world=$dir/$world_kind-$world_seed-$((millions + 2))m
if [[ ! -d $world ]]; then
    mkdir -p "$dir"
    "$upsell" synth --rows $(((millions + 2) * 1000000)) --rows-per-file 1000000 --truth-files 1 \
        --seed "$world_seed" --world "$world_kind" --out "$world.tmp" >/dev/null
    mv "$world.tmp" "$world"
fi
train=$dir/train-$world_kind-$world_seed-$millions
rm -rf "$train" && mkdir -p "$train"
for file in "$world"/exposures/part-*.parquet; do
    case $(basename "$file") in
        part-00000.parquet | part-00001.parquet) ;;
        *) ln -s "$file" "$train/" ;;
    esac
done

run=$dir/run-$world_kind-$world_seed-$millions
rm -rf "$run"
summary=$(/usr/bin/time -f '%M %e' -o "$dir/time" "$upsell" train --config "$world/config.toml" \
    --data "$train" --valid "$world/exposures/part-00001.parquet" --set data.stream=true \
    --set train.threads=2 --out "$run" | tail -n 1)
report=$("$upsell" eval --checkpoint "$run/checkpoint" \
    --data "$world/exposures/part-00000.parquet" --truth "$world/truth/part-00000.parquet")

python3 - "$millions" "$world_kind" "$world_seed" "$machine" "$summary" "$report" "$(cat "$dir/time")" <<'PY' | tee ${out:+"$out"}
import json, sys
millions, world, seed, machine = sys.argv[1:5]
summary, report = json.loads(sys.argv[5]), json.loads(sys.argv[6])
rss_kib, wall = sys.argv[7].split()
q, c, plan = report["decisions"], report["conversion"], report.get("plan") or {}
plan_loss = f"{plan['log_loss']:.4f}" if "log_loss" in plan else ""
print(f"# Decision quality at {millions} million rows, streamed\n")
print(f"`scripts/decision-quality-streamed.sh {millions} {world} {seed}`\n")
print("| world | training rows | epochs | training s | wall s | peak RSS MiB | share of lift | share of Bayes "
      "| value / user | oracle | AUC | best AUC | ECE | plan log loss |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| `{world}` | {summary['train_rows']:,} | {summary['epochs']} | {summary['seconds']:.0f} | {float(wall):.0f} "
      f"| {int(rss_kib) / 1024:,.0f} | {q['share_of_lift']:.3f} | {q['share_of_bayes_lift']:.3f} "
      f"| {q['policy_value']:.3f} | {q['oracle_value']:.3f} | {c['auc']:.4f} | {q['best_achievable_auc']:.4f} "
      f"| {c['ece']:.4f} | {plan_loss} |")
print(f"\nWorld `{world}`, seed {seed}; the default config with data.stream = true and 2 threads; "
      f"decisions for the {q['rows']:,} held-out users. {machine}.")
PY
