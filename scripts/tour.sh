#!/usr/bin/env bash
# Replays the README's tour (scripts/tour.py) in a scratch directory, with the
# built binary first on PATH as `upsell`. CI runs it, so the tour cannot go
# stale. Needs curl and jq.
#
#   scripts/tour.sh [UPSELL_BINARY]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$repo/target}/release/upsell}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
ln -s "$(realpath "$bin")" "$work/bin/upsell"
PATH="$work/bin:$PATH" python3 "$repo/scripts/tour.py" "$repo/README.md" "$work"
