#!/usr/bin/env bash
# The decision-quality benchmark over every synthetic world: runs
# scripts/decision-quality.sh per world and writes, into benches/,
# decision-quality/ROWS/WORLD.md (and .json, every run's record) and a
# summary table per world in decision-quality-ROWS.md.
#
#   scripts/decision-quality-all.sh [ROWS] [SEEDS] [WORLD_SEED] [WORLD...]
#
# ROWS (default 200000), SEEDS (default 3) and WORLD_SEED (default 21) as in
# scripts/decision-quality.sh; the worlds default to all of them, `holdout`
# (kept out of all tuning) last. The same environment variables apply.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rows=${1:-200000}
seeds=${2:-3}
world_seed=${3:-21}
shift $(($# < 3 ? $# : 3))
worlds=("$@")
if [[ ${#worlds[@]} -eq 0 ]]; then
    worlds=(default weak_interactions noisy switchers rare regional price_sensitive holdout)
fi
cd "$(dirname "$0")/.."
dir=benches/decision-quality/$rows
mkdir -p "$dir"
started=$(date +%s)
for world in "${worlds[@]}"; do
    echo "== $world" >&2
    UPSELL_DQ_OUT="$dir/$world.md" scripts/decision-quality.sh "$rows" "$seeds" "$world_seed" "$world"
done
minutes=$(( ($(date +%s) - started + 59) / 60 ))

python=$(bench_python)
"$python" - "$dir" "$rows" "$seeds" "$world_seed" "$minutes" "$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)" \
    "${UPSELL_DQ_SET:-}" "${UPSELL_DQ_LGBM_SEEDS:-$seeds}" "${worlds[@]}" >"benches/decision-quality-$rows.md" <<'PY'
import json, statistics, sys
from pathlib import Path

directory, rows, seeds, world_seed, minutes, machine, overrides, lgbm_seeds, *worlds = sys.argv[1:]

def stat(records, key, digits):
    values = [r[key] for r in records if r.get(key) is not None]
    if not values:
        return ""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"

setting = f"UPSELL_DQ_SET=\"{overrides}\" " if overrides else ""
if lgbm_seeds != seeds:
    setting += f"UPSELL_DQ_LGBM_SEEDS={lgbm_seeds} "
print(f"# Decision quality, {int(rows):,} training rows\n")
print(f"`{setting}scripts/decision-quality-all.sh {rows} {seeds} {world_seed}`"
      f" ({minutes} minutes on {machine}; per-world tables and every run's record in"
      f" [decision-quality/{rows}/](decision-quality/{rows}/)).\n")
print("Share of achievable lift of each policy's decisions on 50,000 held-out users"
      " (0: a random eligible offer, 1: the oracle), mean ± sd over training seeds"
      " 1..{0} for upsell (`upsell recommend`, default config) and 1..{1} for LightGBM; logistic"
      " regression is deterministic. AUC is the conversion AUC on the held-out"
      " outcomes; \"best\" is the AUC of the Bayes probabilities (the best any model of"
      " the observed features can reach).\n".format(seeds, lgbm_seeds))
print("| world | upsell | LightGBM | logistic | Bayes policy | upsell AUC | LightGBM AUC | best AUC | upsell ECE | upsell plan log loss |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for world in worlds:
    records = json.loads(Path(directory, f"{world}.json").read_text())
    by = lambda policy: [r for r in records if r["policy"] == policy]
    name = f"`{world}`" + (" (held out of tuning)" if world == "holdout" else "")
    print(f"| {name} | {stat(by('upsell'), 'share_of_lift', 3)} | {stat(by('lightgbm'), 'share_of_lift', 3)}"
          f" | {stat(by('logreg'), 'share_of_lift', 3)} | {stat(by('bayes'), 'share_of_lift', 3)}"
          f" | {stat(by('upsell'), 'auc', 4)} | {stat(by('lightgbm'), 'auc', 4)} | {stat(by('bayes'), 'auc', 4)}"
          f" | {stat(by('upsell'), 'ece', 4)} | {stat(by('upsell'), 'plan_log_loss', 3)} |")
PY
echo "wrote benches/decision-quality-$rows.md" >&2
