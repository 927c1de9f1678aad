#!/usr/bin/env bash
# End-to-end check of `upsell train --tracking-uri` against real MLflow
# tracking servers: trains tiny runs that log to throwaway servers on loopback
# and reads each run back through MLflow's REST API. The cases:
#
#   plain  a plain `mlflow server` over http://.
#   retry  scripts/mlflow_proxy.py in front of the plain server answers the
#          first requests with 503 (then, in a second run, 429); the run must
#          still arrive whole, and the proxy must have failed exactly that many.
#   auth   a `mlflow server --app-name basic-auth` behind mlflow_proxy.py
#          terminating TLS with a certificate from a throwaway CA: a run with
#          MLFLOW_TRACKING_USERNAME/PASSWORD and MLFLOW_TRACKING_SERVER_CERT_PATH
#          arrives; a wrong password fails with 401/403; without the CA the
#          certificate is refused.
#
#   python3 -m pip install 'mlflow[auth]>=3,<4'     # ~1 min, ~850 MB installed
#   scripts/mlflow-check.sh target/release/upsell
#
# Needs: mlflow on PATH (or $MLFLOW) with the `auth` extra (Flask-WTF) for the
# auth case, python3 (standard library only), openssl, setsid.
# Environment: MLFLOW (the mlflow command), MLFLOW_START_TIMEOUT (seconds to
# wait for a server's /health, default 120), MLFLOW_CHECK_CASES (which cases
# to run, default "plain retry auth").
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH/TO/upsell" >&2
    exit 2
fi
upsell=$(realpath "$1")
[[ -x $upsell ]] || { echo "error: $1 is not an executable" >&2; exit 2; }
mlflow=${MLFLOW:-mlflow}
command -v "$mlflow" >/dev/null || { echo "error: '$mlflow' not found; pip install 'mlflow[auth]>=3,<4'" >&2; exit 2; }
start_timeout=${MLFLOW_START_TIMEOUT:-120}
cases=" ${MLFLOW_CHECK_CASES:-plain retry auth} "
cases=${cases//,/ }
for c in $cases; do
    [[ $c =~ ^(plain|retry|auth)$ ]] || { echo "error: unknown case '$c' in MLFLOW_CHECK_CASES (plain, retry, auth)" >&2; exit 2; }
done
wants() { [[ $cases == *" $1 "* ]]; }
proxy=$(dirname "$(realpath "$0")")/mlflow_proxy.py
[[ -f $proxy ]] || { echo "error: $proxy not found" >&2; exit 2; }
if wants auth; then
    command -v openssl >/dev/null || { echo "error: openssl not found (the auth case makes a certificate)" >&2; exit 2; }
fi

# Every case sets what it needs; nothing leaks in from the caller's environment.
unset MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD \
    MLFLOW_TRACKING_TOKEN MLFLOW_TRACKING_SERVER_CERT_PATH MLFLOW_TRACKING_INSECURE_TLS \
    MLFLOW_HTTP_REQUEST_MAX_RETRIES MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR UPSELL_MLFLOW_PARENT_RUN \
    MLFLOW_AUTH_CONFIG_PATH MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY

tmp=$(mktemp -d)
pgids=() # process-group ids (each started under setsid) to end on exit
logs=()   # logs to show when the check fails
cleanup() {
    local status=$? pid log alive
    # `mlflow server` runs uvicorn and a job runner as children; each server
    # and proxy has its own process group (setsid), so end whole groups: 5 s
    # for all of them to stop, then SIGKILL.
    for pid in "${pgids[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        alive=
        for pid in "${pgids[@]}"; do
            kill -0 -- "-$pid" 2>/dev/null && alive=1
        done
        [[ -n $alive ]] || break
        sleep 0.1
    done
    for pid in "${pgids[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        for log in "${logs[@]}"; do
            [[ -s $log ]] || continue
            echo "--- last lines of ${log#"$tmp"/} ---" >&2
            tail -n 40 "$log" >&2
        done
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (another process could take it before the server
# binds it; the server then fails to start and the log says so).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME PORT [MLFLOW-SERVER-ARGS...]: starts `mlflow server` in
# the background with its own process group; sets server_pid. Environment
# assignments before the call reach the server.
start_server() {
    local name=$1 port=$2
    shift 2
    # Artifacts are proxied by the server (`mlflow-artifacts:/` run roots, the
    # default since MLflow 2) and stored under --artifacts-destination.
    setsid "$mlflow" server \
        --host 127.0.0.1 --port "$port" --workers 1 \
        --backend-store-uri "sqlite:///$tmp/$name.db" \
        --artifacts-destination "$tmp/$name-artifacts" \
        "$@" >"$tmp/$name.log" 2>&1 &
    server_pid=$!
    pgids+=("$server_pid")
    logs+=("$tmp/$name.log")
}

# wait_healthy NAME PID URI: waits for the server's /health.
wait_healthy() {
    local name=$1 pid=$2 uri=$3 deadline=$((SECONDS + start_timeout))
    until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$uri/health" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: the MLflow server '$name' exited before answering $uri/health" >&2
            if grep -q Flask-WTF "$tmp/$name.log"; then
                echo "error: the basic-auth app needs the auth extra: pip install 'mlflow[auth]>=3,<4' (or Flask-WTF)" >&2
            fi
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "error: the MLflow server '$name' did not answer $uri/health within ${start_timeout}s" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# start_proxy NAME UPSTREAM [PROXY-ARGS...]: starts mlflow_proxy.py on a free
# loopback port; sets proxy_port.
start_proxy() {
    local name=$1 upstream=$2 pid deadline=$((SECONDS + 20))
    shift 2
    setsid python3 "$proxy" --listen 127.0.0.1:0 --upstream "$upstream" "$@" \
        >"$tmp/$name.port" 2>"$tmp/$name.log" &
    pid=$!
    pgids+=("$pid")
    logs+=("$tmp/$name.log")
    proxy_port=
    until [[ $proxy_port =~ ^[0-9]+$ ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: the proxy '$name' exited before listening" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "error: the proxy '$name' did not print its port within 20s" >&2
            exit 1
        fi
        sleep 0.1
        proxy_port=$(head -n 1 "$tmp/$name.port")
    done
}

# train NAME URI EXPERIMENT: a tiny training that logs to URI; sets summary
# (the JSON line it ends with). Environment assignments before the call reach
# `upsell train`, and so do the arguments in train_extra.
train_extra=()
train() {
    local name=$1 uri=$2 experiment=$3
    echo "--- $name: upsell train --tracking-uri $uri --experiment $experiment"
    "$upsell" train \
        --set train.epochs=2 --set train.synthetic_rows=5000 \
        --tracking-uri "$uri" --experiment "$experiment" "${train_extra[@]}" \
        --out "$tmp/run-$name" | tee "$tmp/$name.stdout" ||
        { echo "error: $name: upsell train failed (its stderr is above)" >&2; exit 1; }
    summary=$(tail -n 1 "$tmp/$name.stdout")
}

# train_fails NAME URI EXPERIMENT [any]: like train, but the command must
# fail within 5 minutes, with exit status 1 or 2 (any non-zero one with
# `any`); its stderr is left in $tmp/NAME.stderr and its last line in
# last_error.
train_fails() {
    local name=$1 uri=$2 experiment=$3 codes=${4:-} status=0
    echo "--- $name: upsell train --tracking-uri $uri --experiment $experiment (must fail)"
    timeout 300 "$upsell" train \
        --set train.epochs=2 --set train.synthetic_rows=5000 \
        --tracking-uri "$uri" --experiment "$experiment" \
        --out "$tmp/run-$name" >"$tmp/$name.stdout" 2>"$tmp/$name.stderr" || status=$?
    last_error=$(grep -v '^[[:space:]]*$' "$tmp/$name.stderr" | tail -n 1 || true)
    if [[ $status -eq 0 ]]; then
        echo "error: $name: upsell train succeeded; it should have failed" >&2
        exit 1
    elif [[ $status -eq 124 ]]; then
        echo "error: $name: upsell train did not exit within 300s" >&2
        exit 1
    elif [[ $codes != any && $status -ne 1 && $status -ne 2 ]]; then
        echo "error: $name: upsell train exited with $status, not 1 or 2; stderr ends: $last_error" >&2
        exit 1
    fi
}

# check_run LABEL URI EXPERIMENT SUMMARY: reads the experiment's one run back
# through the REST API and checks what arrived. MLFLOW_TRACKING_USERNAME,
# MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_SERVER_CERT_PATH, when set,
# are used as `upsell train` uses them.
check_run() {
    python3 - "$@" <<'EOF'
"""Reads the run back through MLflow's REST API and checks what arrived."""
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

label, uri, experiment, summary = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
api = uri + "/api/2.0/mlflow"
headers = {"Content-Type": "application/json"}
username = os.environ.get("MLFLOW_TRACKING_USERNAME")
password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
if username and password:
    headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
context = None
if uri.startswith("https:"):
    context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))


def call(endpoint, query=None, body=None):
    url = f"{api}/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        sys.exit(f"error: {label}: {request.get_method()} {url}: HTTP {err.code}: {err.read().decode(errors='replace')}")


def check(condition, message):
    if not condition:
        sys.exit(f"error: {label}: {message}")


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

tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
for key in ("upsell.command", "upsell.host"):
    check(tags.get(key), f"tag {key} missing or empty; tags: {sorted(tags)}")
check("train" in tags["upsell.command"], f"tag upsell.command is {tags['upsell.command']!r}, not a train command line")
if password:
    logged = [*params.values(), *tags.values()]
    check(not any(password in value for value in logged), "the tracking password appears in a logged param or tag")

commit = tags.get("mlflow.source.git.commit", "unknown")
print(
    f"OK {label}: mlflow run {run_id}: FINISHED, {len(params)} params, {epochs} epochs of "
    f"valid_conversion_auc, {len(found)} artifacts, commit {commit[:12]}"
)
EOF
}

# check_registered URI MODEL EXPERIMENT: MODEL has one version, made from
# the experiment's run's checkpoint artifacts.
check_registered() {
    python3 - "$@" <<'EOF'
import json, sys, urllib.parse, urllib.request

uri, model, experiment = sys.argv[1:4]
api = uri + "/api/2.0/mlflow"


def call(endpoint, query):
    with urllib.request.urlopen(f"{api}/{endpoint}?{urllib.parse.urlencode(query)}", timeout=10) as response:
        return json.load(response)


versions = call("model-versions/search", {"filter": f"name='{model}'"}).get("model_versions", [])
if len(versions) != 1:
    sys.exit(f"error: registry: expected 1 version of {model}, found {len(versions)}")
version = versions[0]
experiment_id = call("experiments/get-by-name", {"experiment_name": experiment})["experiment"]["experiment_id"]
run = call("runs/get", {"run_id": version["run_id"]})["run"]
if run["info"]["experiment_id"] != experiment_id or not version["source"].endswith("/checkpoint"):
    sys.exit(f"error: registry: version {version} does not point at the run's checkpoint")
print(f"OK registry: {model} version {version['version']} from run {version['run_id']}: {version['source']}")
EOF
}

# sweep_case URI: a two-trial sweep logs one parent run and a child run per
# trial, each tagged with the parent's id.
sweep_case() {
    local uri=$1
    echo "--- sweep: upsell sweep --tracking-uri $uri --experiment upsell-ci-sweep"
    "$upsell" sweep --set train.epochs=1 --set train.synthetic_rows=3000 \
        --grid train.lr=0.001,0.003 --tracking-uri "$uri" --experiment upsell-ci-sweep \
        --out "$tmp/sweep" >"$tmp/sweep.stdout" ||
        { echo "error: sweep: upsell sweep failed" >&2; exit 1; }
    python3 - "$uri" <<'EOF'
import json, sys, urllib.parse, urllib.request

api = sys.argv[1] + "/api/2.0/mlflow"


def call(endpoint, query=None, body=None):
    url = f"{api}/{endpoint}" + ("?" + urllib.parse.urlencode(query) if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


experiment_id = call("experiments/get-by-name", {"experiment_name": "upsell-ci-sweep"})["experiment"]["experiment_id"]
runs = call("runs/search", body={"experiment_ids": [experiment_id], "max_results": 10}).get("runs", [])
tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
parents = [r for r, t in zip(runs, tags) if "mlflow.parentRunId" not in t]
if len(runs) != 3 or len(parents) != 1:
    sys.exit(f"error: sweep: expected a parent run and 2 children, found {len(runs)} runs, {len(parents)} without a parent")
parent = parents[0]["info"]["run_id"]
children = [t for t in tags if t.get("mlflow.parentRunId") == parent]
if len(children) != 2:
    sys.exit(f"error: sweep: {len(children)} runs name the parent {parent}")
statuses = sorted(r["info"]["status"] for r in runs)
if statuses != ["FINISHED"] * 3:
    sys.exit(f"error: sweep: run statuses {statuses}")
parent_tags = dict(zip([r["info"]["run_id"] for r in runs], tags))[parent]
print(f"OK sweep: parent run {parent} with 2 child runs, best trial {parent_tags.get('upsell.best_trial')}")
EOF
}

# count_failed NAME: how many requests the proxy NAME answered with its
# injected failure, from its --count-file.
count_failed() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["failed"])' "$tmp/$1.counts"
}

# retry_case NAME FAILURES STATUS: the plain server behind a proxy failing
# the first FAILURES requests with STATUS.
retry_case() {
    local name=$1 failures=$2 status=$3 failed
    start_proxy "$name" "$plain_uri" --fail-first "$failures" --fail-status "$status" --count-file "$tmp/$name.counts"
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.05 \
        train "$name" "http://127.0.0.1:$proxy_port" "upsell-ci-$name"
    failed=$(count_failed "$name")
    if [[ $failed -ne $failures ]]; then
        echo "error: $name: the proxy failed $failed requests with $status, expected $failures" >&2
        exit 1
    fi
    check_run "$name (upsell retried $failed x $status)" "$plain_uri" "upsell-ci-$name" "$summary"
}

# The servers take 5-20 s each to start; start both, then wait.
if wants plain || wants retry; then
    plain_port=$(free_port)
    plain_uri=http://127.0.0.1:$plain_port
    start_server plain "$plain_port"
    plain_pid=$server_pid
fi
if wants auth; then
    # MLflow ships no default admin password (and rejects the old
    # admin/password1234); the auth config sets one, and keeps the user store
    # in $tmp instead of ./basic_auth.db. Caching good credentials spares a
    # PBKDF2 hash per request (about 0.5 s each on a busy CI machine).
    auth_user="upsell-ci"
    auth_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    cat >"$tmp/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$tmp/basic_auth.db
admin_username = $auth_user
admin_password = $auth_password
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 600
EOF
    auth_port=$(free_port)
    auth_upstream=http://127.0.0.1:$auth_port
    MLFLOW_AUTH_CONFIG_PATH=$tmp/basic_auth.ini \
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(16))') \
        start_server auth "$auth_port" --app-name basic-auth
    auth_pid=$server_pid

    # A throwaway CA and a server certificate it signs (CA:FALSE, serverAuth,
    # subjectAltName for 127.0.0.1 and localhost), as a strict rustls/webpki
    # verifier wants; MLFLOW_TRACKING_SERVER_CERT_PATH points at the CA.
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=upsell mlflow-check CA" -keyout "$tmp/ca.key" -out "$tmp/ca.pem" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout "$tmp/server.key" -out "$tmp/server.csr"
        printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
            extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost >"$tmp/server.ext"
        openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
            -days 2 -extfile "$tmp/server.ext" -out "$tmp/server.pem"
    } >"$tmp/openssl.log" 2>&1 || {
        cat "$tmp/openssl.log" >&2
        echo "error: making the test certificates with openssl failed" >&2
        exit 1
    }
fi

if wants plain || wants retry; then
    wait_healthy plain "$plain_pid" "$plain_uri"
fi

if wants plain; then
    train_extra=(--register-model upsell-ci-model)
    train plain "$plain_uri" upsell-ci
    train_extra=()
    check_run plain "$plain_uri" upsell-ci "$summary"
    check_registered "$plain_uri" upsell-ci-model upsell-ci
    sweep_case "$plain_uri"
fi

if wants retry; then
    retry_case retry-503 3 503
    retry_case retry-429 2 429
fi

if wants auth; then
    wait_healthy auth "$auth_pid" "$auth_upstream"
    start_proxy auth-tls "$auth_upstream" --cert "$tmp/server.pem" --key "$tmp/server.key"
    auth_uri=https://127.0.0.1:$proxy_port

    MLFLOW_TRACKING_USERNAME=$auth_user MLFLOW_TRACKING_PASSWORD=$auth_password \
        MLFLOW_TRACKING_SERVER_CERT_PATH=$tmp/ca.pem \
        train auth "$auth_uri" upsell-ci-auth
    MLFLOW_TRACKING_USERNAME=$auth_user MLFLOW_TRACKING_PASSWORD=$auth_password \
        MLFLOW_TRACKING_SERVER_CERT_PATH=$tmp/ca.pem \
        check_run "auth (basic auth over TLS)" "$auth_uri" upsell-ci-auth "$summary"

    # Failures need no retries; a client that retries them anyway stays quick.
    MLFLOW_TRACKING_USERNAME=$auth_user MLFLOW_TRACKING_PASSWORD=wrong-$auth_password \
        MLFLOW_TRACKING_SERVER_CERT_PATH=$tmp/ca.pem \
        MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.05 \
        train_fails auth-wrong-password "$auth_uri" upsell-ci-auth-wrong
    if ! grep -qwE '401|403' "$tmp/auth-wrong-password.stderr"; then
        echo "error: auth-wrong-password: stderr names neither 401 nor 403; it ends: $last_error" >&2
        exit 1
    fi
    echo "OK auth-wrong-password: upsell train failed: $last_error"

    MLFLOW_TRACKING_USERNAME=$auth_user MLFLOW_TRACKING_PASSWORD=$auth_password \
        MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.05 \
        train_fails auth-untrusted-cert "$auth_uri" upsell-ci-auth-untrusted any
    echo "OK auth-untrusted-cert: upsell train failed: $last_error"
fi
