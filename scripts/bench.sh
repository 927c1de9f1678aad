#!/usr/bin/env bash
# The benchmark suite on this machine's CPU: matrix-multiply rate, training
# (small, default and large models on burn-flex and burn-ndarray), batch
# scoring at batch 1, 64 and 4096, single-row latency, data preparation and
# `upsell score` on 1,000,000 Parquet rows. Writes a Markdown table.
#
#   scripts/bench.sh [OUT.md] [upsell bench arguments...]
#
# OUT.md defaults to benches/cpu.md; a relative OUT.md is taken from the
# directory the script is run in. Set UPSELL to use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out=${1:-benches/cpu.md}
dest=$(user_path "${1:-}" "$out")
shift || true
cd "$(dirname "$0")/.."
upsell=$(upsell_bin)
machine="$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$upsell" bench --work "$work" "$@" | tee "$work/bench.jsonl"
# numpy's OpenBLAS matmul, where numpy is installed: the machine's best f32
# rate, beside burn's own.
reference=$(python3 scripts/numpy-matmul.py 2>/dev/null || true)
mkdir -p "$(dirname "$dest")"
{
    echo "# upsell bench"
    echo
    # With $UPSELL set the command line says so, without the binary's path.
    echo "\`${UPSELL:+UPSELL=<prebuilt upsell> }scripts/bench.sh $out $*\`"
    echo
    python3 scripts/bench-table.py "$machine" "$reference" <"$work/bench.jsonl"
} >"$dest.tmp"
mv "$dest.tmp" "$dest"
echo "wrote $out" >&2
