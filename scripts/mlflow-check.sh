#!/usr/bin/env bash
# End-to-end check of `upsell train --tracking-uri` against a real MLflow
# tracking server: starts a throwaway server, trains a tiny run that logs to
# it, then reads the run back through MLflow's REST API.
#
#   python3 -m pip install 'mlflow>=3,<4'     # ~1 min, ~850 MB installed
#   scripts/mlflow-check.sh target/release/upsell
#
# Needs: mlflow on PATH (or $MLFLOW), python3 (standard library only), setsid.
# Environment: MLFLOW (the mlflow command), MLFLOW_START_TIMEOUT (seconds to
# wait for the server's /health, default 120).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH/TO/upsell" >&2
    exit 2
fi
upsell=$(realpath "$1")
[[ -x $upsell ]] || { echo "error: $1 is not an executable" >&2; exit 2; }
mlflow=${MLFLOW:-mlflow}
command -v "$mlflow" >/dev/null || { echo "error: '$mlflow' not found; pip install 'mlflow>=3,<4'" >&2; exit 2; }
start_timeout=${MLFLOW_START_TIMEOUT:-120}

tmp=$(mktemp -d)
server_pid=
cleanup() {
    local status=$?
    if [[ -n $server_pid ]]; then
        # `mlflow server` runs uvicorn and a job runner as children; the
        # server has its own process group (setsid), so end the whole group.
        kill -TERM -- "-$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 -- "-$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$server_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s $tmp/server.log ]]; then
        echo "--- last lines of the MLflow server's log ---" >&2
        tail -n 40 "$tmp/server.log" >&2
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (another process could take it before the server
# binds it; the server then fails to start and the log says so).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
uri=http://127.0.0.1:$port

# Artifacts are proxied by the server (`mlflow-artifacts:/` run roots, the
# default since MLflow 2) and stored under --artifacts-destination.
setsid "$mlflow" server \
    --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$tmp/mlflow.db" \
    --artifacts-destination "$tmp/artifacts" \
    >"$tmp/server.log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + start_timeout))
until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$uri/health" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: the MLflow server exited before answering $uri/health" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "error: the MLflow server did not answer $uri/health within ${start_timeout}s" >&2
        exit 1
    fi
    sleep 0.5
done

"$upsell" train \
    --set train.epochs=2 --set train.synthetic_rows=5000 \
    --tracking-uri "$uri" --experiment upsell-ci \
    --out "$tmp/run" | tee "$tmp/train.stdout"
summary=$(tail -n 1 "$tmp/train.stdout")

python3 - "$uri" upsell-ci "$summary" <<'EOF'
"""Reads the run back through MLflow's REST API and checks what arrived."""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

uri, experiment, summary = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
api = uri + "/api/2.0/mlflow"


def call(endpoint, query=None, body=None):
    url = f"{api}/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        sys.exit(f"error: {request.get_method()} {url}: HTTP {err.code}: {err.read().decode(errors='replace')}")


def check(condition, message):
    if not condition:
        sys.exit(f"error: {message}")


experiment_id = call("experiments/get-by-name", {"experiment_name": experiment})["experiment"]["experiment_id"]
runs = call("runs/search", body={"experiment_ids": [experiment_id], "max_results": 10}).get("runs", [])
check(len(runs) == 1, f"expected 1 run in experiment {experiment!r}, found {len(runs)}")
run = runs[0]
run_id = run["info"]["run_id"]

check(run["info"]["status"] == "FINISHED", f"run {run_id} has status {run['info']['status']}, not FINISHED")

params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
check("train.lr" in params, f"param train.lr missing; params: {sorted(params)}")

epochs = summary["epochs"]
history = call("metrics/get-history", {"run_id": run_id, "metric_key": "valid_conversion_auc"}).get("metrics", [])
check(
    len(history) == epochs,
    f"valid_conversion_auc has {len(history)} points, the summary says {epochs} epochs",
)


def artifacts(path=""):
    """Every file path below `path` in the run's artifact root."""
    query = {"run_id": run_id}
    if path:
        query["path"] = path
    for entry in call("artifacts/list", query).get("files", []):
        if entry.get("is_dir"):
            yield from artifacts(entry["path"])
        else:
            yield entry["path"]


found = set(artifacts())
for expected in ("report/report.html", "metrics.jsonl"):
    check(expected in found, f"artifact {expected} missing; artifacts: {sorted(found)}")

print(f"OK mlflow run {run_id}: FINISHED, {len(params)} params, {epochs} epochs of valid_conversion_auc, {len(found)} artifacts")
EOF
