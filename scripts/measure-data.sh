#!/usr/bin/env bash
# Measures the data path on this machine: `upsell synth` rate and peak memory
# for N rows (default 10 million), and the time to load, fit and transform
# 1 million rows with `upsell prepare`. Prints the machine it ran on.
#
#   scripts/measure-data.sh [ROWS] [WORKDIR]
#
# WORKDIR (a relative one is taken from the directory the script is run in)
# keeps the data; without it a temporary directory holds it and is removed
# at the end. Set UPSELL to use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rows="${1:-10000000}"
if [[ -n ${2:-} ]]; then
    work=$(caller_path "$2")
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
cd "$(dirname "$0")/.."
bin=$(upsell_bin)

echo "machine: $(nproc) cores, $(mem_gib) GiB, $(cpu_model)"

rm -rf "$work/synth-big" "$work/synth-1m"
echo "== upsell synth --rows $rows"
/usr/bin/time -f "peak RSS %M KiB, wall %e s" "$bin" synth --rows "$rows" --seed 1 --out "$work/synth-big"

echo "== upsell prepare on 1,000,000 rows"
"$bin" synth --rows 1000000 --seed 2 --out "$work/synth-1m" >/dev/null
/usr/bin/time -f "peak RSS %M KiB, wall %e s" "$bin" prepare --config "$work/synth-1m/config.toml"
