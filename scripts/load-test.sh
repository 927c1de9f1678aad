#!/usr/bin/env bash
# A bounded load test of `upsell serve` on loopback with wrk: 30 s per case,
# 2 threads, 8 connections, /v2/models/upsell/infer with batches of 1 and 64
# demo rows, and /v1/recommend with 1 user. Prints the machine, throughput
# and latency percentiles, and the in-process model time per request.
#
#   apt-get install wrk
#   scripts/load-test.sh [CHECKPOINT] [SECONDS]
#
# CHECKPOINT defaults to the repository's checkpoints/demo; a relative one
# is taken from the directory the script is run in. Set UPSELL to use
# another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
checkpoint=$(user_path "${1:-}" checkpoints/demo)
seconds="${2:-30}"
cd "$(dirname "$0")/.."
upsell=$(upsell_bin)
work="$(mktemp -d)"
addr=127.0.0.1:18181
server=
trap 'stop_server; rm -rf "$work"' EXIT
# As many scoring slots as wrk has connections: this measures latency and
# failures, not load shedding (scripts/overload-test.sh does that).
export UPSELL_MAX_CONCURRENT=8
start_server "$checkpoint" "$addr"

echo "machine: $(nproc) cores, $(cpu_model); server and wrk share it"
scripts/wrk-bodies.sh "$checkpoint" "$work"
for case in infer-1 infer-64 recommend-1; do
    path=/v2/models/upsell/infer
    [ "$case" = recommend-1 ] && path=/v1/recommend
    BODY="$work/$case.json" wrk -t2 -c8 -d"${seconds}s" --latency -s "$work/post.lua" "http://$addr$path" \
        | grep RESULT | sed "s/^RESULT/$case:/"
done
echo "server-side time per request (mean of upsell_request_duration_seconds, from /metrics):"
curl -s "http://$addr/metrics" | python3 -c '
import sys, re
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"upsell_request_duration_seconds_(sum|count)\{route=\"([^\"]+)\"\} (\S+)", line)
    if m:
        (sums if m[1] == "sum" else counts)[m[2]] = float(m[3])
for route in sums:
    if counts.get(route):
        print(f"  {route}: {1000 * sums[route] / counts[route]:.3f} ms over {int(counts[route])} requests")
'
