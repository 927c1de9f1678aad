#!/usr/bin/env bash
# A bounded load test of `upsell serve` on loopback with wrk: 30 s per case,
# 2 threads, 8 connections, /v2/models/upsell/infer with batches of 1 and 64
# demo rows, and /v1/recommend with 1 user. Prints the machine, throughput
# and latency percentiles, and the in-process model time per request.
#
#   apt-get install wrk
#   scripts/load-test.sh [CHECKPOINT] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint="${1:-checkpoints/demo}"
seconds="${2:-30}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/upsell"
work="$(mktemp -d)"
addr=127.0.0.1:18181
"$bin" serve --checkpoint "$checkpoint" --addr "$addr" 2>"$work/server.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "http://$addr/v2/health/ready" >/dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); server and wrk share it"
python3 - "$checkpoint" "$work" <<'PY'
import csv, json, sys
from pathlib import Path
checkpoint, work = Path(sys.argv[1]), Path(sys.argv[2])
manifest = json.loads((checkpoint / "manifest.json").read_text())
pre = manifest["preprocessor"]
numeric = {f["column"] for f in pre["numeric"]}
columns = [f["column"] for f in pre["numeric"]] + [v["column"] for v in pre["categorical"]] \
    + [h["column"] for h in pre["hashed"]] + ([pre["offer"]] if pre["offer"] else []) \
    + [v["column"] for v in pre["context"]]
rows = list(csv.DictReader(open(checkpoint / "rows.csv")))
def cell(c, v):
    return None if v == "" else (float(v) if c in numeric else v)
for n in (1, 64):
    batch = [rows[i % len(rows)] for i in range(n)]
    inputs = [{"name": c, "shape": [n, 1], "datatype": "FP32" if c in numeric else "BYTES",
               "data": [cell(c, r[c]) for r in batch]} for c in columns]
    (work / f"infer-{n}.json").write_text(json.dumps({"inputs": inputs}))
users = [{k: cell(k, v) for k, v in rows[0].items()}]
(work / "recommend-1.json").write_text(json.dumps({"users": users}))
PY
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.requests))
end
LUA
for case in infer-1 infer-64 recommend-1; do
    path=/v2/models/upsell/infer
    [ "$case" = recommend-1 ] && path=/v1/recommend
    BODY="$work/$case.json" wrk -t2 -c8 -d"${seconds}s" --latency -s "$work/post.lua" "http://$addr$path" \
        | grep RESULT | sed "s/^RESULT/$case:/"
done
echo "server-side time per request (mean of upsell_request_seconds, from /metrics):"
curl -s "http://$addr/metrics" | python3 -c '
import sys, re
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"upsell_request_seconds_(sum|count)\{route=\"([^\"]+)\"\} (\S+)", line)
    if m:
        (sums if m[1] == "sum" else counts)[m[2]] = float(m[3])
for route in sums:
    if counts.get(route):
        print(f"  {route}: {1000 * sums[route] / counts[route]:.3f} ms over {int(counts[route])} requests")
'
