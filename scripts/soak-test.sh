#!/usr/bin/env bash
# A bounded soak test of `upsell serve` on loopback: WINDOWS windows, every
# window driving /v2/models/upsell/infer (batch 1) and /v1/recommend (1
# user) at once with wrk, and a hot reload (SIGHUP) in the middle window.
# A window lasts SECONDS; with REQUESTS it sends exactly that many requests
# to each endpoint instead, SECONDS being its time limit. After each window
# it prints the requests, failures and p99 of both endpoints and the
# server's resident memory, then checks: no failed request, every window's
# count sent, a reload that took, and memory at the end within 10% (plus
# 8 MiB) of memory after the first window.
#
#   apt-get install wrk
#   scripts/soak-test.sh [CHECKPOINT] [WINDOWS] [SECONDS] [REQUESTS]
#
# CHECKPOINT defaults to the repository's checkpoints/demo; a relative one
# is taken from the directory the script is run in. Set UPSELL to use
# another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
name="${1:-checkpoints/demo}"   # as the report names it
checkpoint=$(user_path "${1:-}" checkpoints/demo)
windows="${2:-8}"
seconds="${3:-15}"
requests="${4:-}"
cd "$(dirname "$0")/.."
upsell=$(upsell_bin)
work="$(mktemp -d)"
addr=127.0.0.1:18282
server=
trap 'stop_server; rm -rf "$work"' EXIT
# As many scoring slots as wrk has connections: this measures latency and
# failures, not load shedding (scripts/overload-test.sh does that).
export UPSELL_MAX_CONCURRENT=8
start_server "$checkpoint" "$addr"
scripts/wrk-bodies.sh "$checkpoint" "$work"

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$server/status"; }
echo "machine: $(nproc) cores, $(cpu_model); server and wrk share it"
if [ -n "$requests" ]; then
    export LIMIT="$requests"
    echo "checkpoint $name; $windows windows of $requests requests per endpoint (at most ${seconds}s); hot reload in window $((windows / 2 + 1))"
else
    echo "checkpoint $name; $windows windows of ${seconds}s; hot reload in window $((windows / 2 + 1))"
fi
echo "| window | infer requests | infer failed | infer p99 ms | recommend requests | recommend failed | recommend p99 ms | server RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
failed=0
first_rss=
for window in $(seq "$windows"); do
    BODY="$work/infer-1.json" wrk -t1 -c4 -d"${seconds}s" --latency -s "$work/post.lua" \
        "http://$addr/v2/models/upsell/infer" | grep RESULT >"$work/infer.txt" &
    infer=$!
    BODY="$work/recommend-1.json" wrk -t1 -c4 -d"${seconds}s" --latency -s "$work/post.lua" \
        "http://$addr/v1/recommend" | grep RESULT >"$work/recommend.txt" &
    recommend=$!
    if [ "$window" -eq $((windows / 2 + 1)) ]; then
        # Mid-window: half the duration in, or a second into a counted one.
        sleep "$([ -n "$requests" ] && echo 1 || echo $((seconds / 2)))"
        kill -HUP "$server"
    fi
    wait "$infer" "$recommend"
    rss=$(rss_mib)
    first_rss=${first_rss:-$rss}
    field() { sed -E "s/.*$2=([0-9.]+).*/\1/" "$work/$1.txt"; }
    failed=$((failed + $(field infer errors) + $(field recommend errors)))
    if [ -n "$requests" ]; then
        for endpoint in infer recommend; do
            [ "$(field $endpoint requests)" -ge "$requests" ] || {
                echo "error: window $window sent $(field $endpoint requests) of $requests $endpoint requests in ${seconds}s" >&2
                exit 1
            }
        done
    fi
    echo "| $window | $(field infer requests) | $(field infer errors) | $(field infer p99_ms) | $(field recommend requests) | $(field recommend errors) | $(field recommend p99_ms) | $rss |"
done
reloads=$(curl -s "http://$addr/metrics" | awk '/^upsell_reloads_total\{outcome="ok"\}/ {print $2}')
echo "reloads: ${reloads:-0}; failed requests: $failed; RSS after window 1: $first_rss MiB, at the end: $rss MiB"
[ "$failed" -eq 0 ] || { echo "error: $failed failed requests" >&2; exit 1; }
[ "${reloads:-0}" != 0 ] || { echo "error: the hot reload did not happen; the server's log:" >&2; cat "$work/server.log" >&2; exit 1; }
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if b <= a * 1.1 + 8 else 1)" "$first_rss" "$rss" \
    || { echo "error: memory grew from $first_rss MiB to $rss MiB" >&2; exit 1; }
echo "OK"
