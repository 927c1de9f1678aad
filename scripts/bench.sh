#!/usr/bin/env bash
# The benchmark suite on this machine's CPU: matrix-multiply rate, training
# (small, default and large models on burn-flex and burn-ndarray), batch
# scoring at batch 1, 64 and 4096, single-row latency, data preparation and
# `upsell score` on 1,000,000 Parquet rows. Writes a Markdown table.
#
#   scripts/bench.sh [OUT.md] [upsell bench arguments...]
#
# OUT.md defaults to benches/cpu.md. Set UPSELL to use another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-benches/cpu.md}
shift || true
upsell=${UPSELL:-}
if [[ -z $upsell ]]; then
    cargo build --release --quiet
    upsell=${CARGO_TARGET_DIR:-target}/release/upsell
fi
machine="$(nproc) cores of $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%Y-%m-%d)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$upsell" bench --work "$work" "$@" | tee "$work/bench.jsonl"
# numpy's OpenBLAS matmul, where numpy is installed: the machine's best f32
# rate, beside burn's own.
reference=$(python3 scripts/numpy-matmul.py 2>/dev/null || true)
mkdir -p "$(dirname "$out")"
{
    echo "# upsell bench"
    echo
    echo "\`scripts/bench.sh $out $*\`"
    echo
    python3 scripts/bench-table.py "$machine" "$reference" <"$work/bench.jsonl"
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2
