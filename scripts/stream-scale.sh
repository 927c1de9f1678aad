#!/usr/bin/env bash
# Out-of-core training at two sizes: peak memory and training rate of one
# epoch streamed from Parquet shards at SMALL and LARGE million rows, against
# loading SMALL million rows into memory. Prints a Markdown table with the
# machine it ran on.
#
#   scripts/stream-scale.sh [SMALL] [LARGE]      # millions of rows; 5 50
#
# The data is `upsell synth` at 1M rows per shard, LARGE + 1 shards (the
# last one is the validation file of every run), kept in $UPSELL_SCALE_DIR
# (default /var/tmp/upsell-scale, about 150 MB per million rows) and reused
# by later runs. Every run trains one epoch of the default model with
# the same config; only how the rows arrive differs. A relative
# $UPSELL_SCALE_DIR is taken from the directory the script is run in. Set
# UPSELL to use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(user_path "${UPSELL_SCALE_DIR:-}" /var/tmp/upsell-scale)
cd "$(dirname "$0")/.."

small=${1:-5}
large=${2:-50}
upsell=$(upsell_bin)
synth=$dir/synth-$((large + 1))m
if [[ ! -d $synth ]]; then
    mkdir -p "$dir"
    "$upsell" synth --rows $(((large + 1) * 1000000)) --out "$synth" >/dev/null
fi
shards=("$synth"/exposures/part-*.parquet)
valid=${shards[$large]}

# A directory of links to the first N shards: the training data of one size.
first() {
    local out=$dir/first-$1
    rm -rf "$out" && mkdir -p "$out"
    for ((i = 0; i < $1; i++)); do ln -s "${shards[$i]}" "$out/"; done
    echo "$out"
}

run() {
    local name=$1 rows=$2 train=$3
    shift 3
    local out=$dir/run-${name// /-}-$rows
    rm -rf "$out"
    local summary
    summary=$(/usr/bin/time -f '%M %e' -o "$dir/time" "$upsell" train \
        --config "$synth/config.toml" --data "$train" --set "data.valid=\"$valid\"" \
        --set train.epochs=1 "$@" --out "$out" | tail -n 1)
    python3 - "$name" "$rows" "$summary" "$(cat "$dir/time")" <<'PY'
import json, sys
name, rows, summary, (rss_kib, wall) = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4].split()
print(f"| {name} | {rows}M | {summary['train_rows']:,} | {summary['train_rows_per_sec']:,.0f} | "
      f"{float(wall):.0f} | {int(rss_kib) / 1024:,.0f} |")
PY
}

echo "| run | shards | training rows | training rows/s | wall s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
run "in memory" "$small" "$(first "$small")"
run "streamed" "$small" "$(first "$small")" --set data.stream=true
run "streamed" "$large" "$(first "$large")" --set data.stream=true
echo
echo "One epoch each, default model and shuffle buffer (data.shuffle_buffer = 1,000,000 rows);" \
    "validation: one 1M-row shard. $(cpu_cores), $(mem_gib) GiB."
