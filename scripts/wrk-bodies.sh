#!/usr/bin/env bash
# Writes the request bodies and the wrk script that scripts/load-test.sh and
# scripts/soak-test.sh send: infer-1.json and infer-64.json (KServe v2
# batches of the checkpoint's stored rows), recommend-1.json (one user) and
# post.lua (POSTs $BODY, stops after $LIMIT responses per thread when set,
# and prints one RESULT line).
#
#   scripts/wrk-bodies.sh CHECKPOINT DIR
set -euo pipefail
checkpoint="$1"
work="$2"
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
-- With LIMIT set (and one wrk thread), wrk stops after LIMIT responses: a
-- fixed request count instead of a duration. The thread stops itself; an
-- interrupt wakes wrk's main thread, which otherwise sleeps out -d. It is
-- sent from the background because system() ignores SIGINT in wrk until
-- the shell returns. The callback exists only with LIMIT, as it costs wrk
-- a Lua call per response.
local limit = tonumber(os.getenv("LIMIT") or "")
if limit then
  local responses = 0
  response = function(status, headers, body)
    responses = responses + 1
    if responses == limit then
      wrk.thread:stop()
      os.execute("(sleep 0.1; kill -INT $PPID) &")
    end
  end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.requests))
end
LUA
