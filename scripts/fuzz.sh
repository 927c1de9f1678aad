#!/usr/bin/env bash
# A longer run of the mutation fuzzers (tests/it/fuzz.rs): request bodies
# against the HTTP router and manifests against the checkpoint loader.
# `cargo test` runs them briefly; this runs ITERATIONS mutations per target.
#
#   scripts/fuzz.sh [ITERATIONS]      # default 300000, about a minute here
set -euo pipefail
cd "$(dirname "$0")/.."
UPSELL_FUZZ_ITERATIONS="${1:-300000}" cargo test --release --test it fuzz -- --nocapture
