#!/usr/bin/env bash
# The server past its limits: `upsell serve` under fixed process limits
# (4 GiB of address space and 256 file handles, with prlimit) takes
# CLIENTS concurrent maximum-size /v1/recommend requests (4096 users each)
# for SECONDS, then 300 idle and partial-header connections at once
# (scripts/overload.py). It must stay up, keep its resident memory under
# RSS_BOUND MiB, shed excess load with 503 and answer nothing else but
# 200, and close every idle connection by the header timeout. Prints the
# figures and the machine; exits 1 when a check fails.
#
#   scripts/overload-test.sh [CHECKPOINT] [SECONDS] [CLIENTS] [RSS_BOUND]
#
# CHECKPOINT defaults to the repository's checkpoints/demo; SECONDS to 60,
# CLIENTS to 64, RSS_BOUND to 1024 (the memory limit of deploy/serve.yaml).
# The server runs with its default limits (two scoring requests per core)
# except a 2 s header timeout, so the idle phase is short. Set UPSELL to
# use another binary.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
checkpoint=$(user_path "${1:-}" checkpoints/demo)
seconds="${2:-60}"
clients="${3:-64}"
rss_bound="${4:-1024}"
cd "$(dirname "$0")/.."
upsell=$(upsell_bin)
work="$(mktemp -d)"
addr=127.0.0.1:18383
header_timeout_ms=2000
server=
trap 'stop_server; rm -rf "$work"' EXIT

prlimit --as=$((4 << 30)) --nofile=256 \
    "$upsell" serve --checkpoint "$checkpoint" --addr "$addr" \
    --header-timeout-ms "$header_timeout_ms" --max-connections 200 \
    2>"$work/server.log" &
server=$!
for _ in $(seq 50); do
    curl -sf --max-time 1 "http://$addr/v2/health/ready" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done

echo "machine: $(cpu_cores), $(mem_gib) GiB; server and clients share it"
echo "server: prlimit --as=4GiB --nofile=256; default limits (--max-concurrent $(( 2 * $(nproc) ))), --max-connections 200, --header-timeout-ms $header_timeout_ms"
status=0
python3 scripts/overload.py --addr "$addr" --pid "$server" --rows "$checkpoint/rows.csv" \
    --seconds "$seconds" --clients "$clients" --rss-bound "$rss_bound" \
    --header-timeout "$((header_timeout_ms / 1000))" || status=$?
curl -s "http://$addr/metrics" | grep -E '^upsell_(requests_shed_total|connections_refused_total|requests_total\{route="/v1/recommend")' || true
if ! kill -0 "$server" 2>/dev/null; then
    echo "FAIL: the server exited; its log:" >&2
    tail -20 "$work/server.log" >&2
    exit 1
fi
exit "$status"
