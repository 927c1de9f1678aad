#!/usr/bin/env bash
# Measures the data path on this machine: `upsell synth` rate and peak memory
# for N rows (default 10 million), and the time to load, fit and transform
# 1 million rows with `upsell prepare`. Prints the machine it ran on.
#
#   scripts/measure-data.sh [ROWS] [WORKDIR]
set -euo pipefail
rows="${1:-10000000}"
work="${2:-$(mktemp -d)}"
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/upsell"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

rm -rf "$work/synth-big" "$work/synth-1m"
echo "== upsell synth --rows $rows"
/usr/bin/time -f "peak RSS %M KiB, wall %e s" "$bin" synth --rows "$rows" --seed 1 --out "$work/synth-big"

echo "== upsell prepare on 1,000,000 rows"
"$bin" synth --rows 1000000 --seed 2 --out "$work/synth-1m" >/dev/null
/usr/bin/time -f "peak RSS %M KiB, wall %e s" "$bin" prepare --config "$work/synth-1m/config.toml"
