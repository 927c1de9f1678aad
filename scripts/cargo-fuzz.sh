#!/usr/bin/env bash
# libFuzzer runs of the fuzz targets in fuzz/ (cargo-fuzz): request bodies
# against the HTTP router and manifests against the checkpoint loader.
#
#   scripts/cargo-fuzz.sh [SECONDS]      # per target; default 60
#
# Installs cargo-fuzz from crates.io when it is missing. On a stable
# toolchain the targets build with `--sanitizer none` (coverage-guided, no
# AddressSanitizer): the code under test is safe Rust, so what fuzzing
# finds here is panics, which libFuzzer reports as crashes either way. A
# crash leaves its input in fuzz/artifacts/TARGET/ and fails the script;
# `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...` replays it. New
# corpus entries go to a temporary directory, so the seeds in fuzz/seeds/
# stay as committed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked --quiet cargo-fuzz
fi
# Its own target directory beside the main one: the instrumented build
# shares nothing with it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}-fuzz"
sanitizer=address
if ! rustc --version | grep -q nightly; then
    sanitizer=none
fi
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
for target in request manifest; do
    mkdir -p "$corpus/$target"
    log=$corpus/$target.log
    if cargo fuzz run --sanitizer "$sanitizer" --release "$target" "$corpus/$target" \
        "fuzz/seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
        echo "cargo-fuzz: $target: no crash in $seconds s"
    else
        tail -n 40 "$log" >&2
        echo "cargo-fuzz: $target failed; a crash leaves its input in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
