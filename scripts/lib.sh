# Helpers shared by the scripts in this directory. Source it first, before
# the script changes directory:
#
#   source "$(dirname "$0")/lib.sh"
#   checkpoint=$(user_path "${1:-}" checkpoints/demo)
#   cd "$(dirname "$0")/.."
#
# Sourcing records the directory the script was started from; relative
# paths given on the command line (and a relative $UPSELL) are taken from
# there, whatever directory the script is in by the time it uses them.

upsell_caller_dir=$PWD
upsell_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# caller_path PATH: PATH, made absolute against the directory the script was
# started from when it is relative.
caller_path() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$upsell_caller_dir/$1" ;;
    esac
}

# user_path ARG DEFAULT: ARG (a path given on the command line) made
# absolute with caller_path, or DEFAULT, unchanged, when ARG is empty.
user_path() {
    if [[ -n $1 ]]; then
        caller_path "$1"
    else
        printf '%s\n' "$2"
    fi
}

# upsell_bin: prints the `upsell` binary to run: $UPSELL when set (a prebuilt
# binary; a relative path is taken from the directory the script was
# started from, a bare name is looked up on PATH), else the binary of a
# fresh `cargo build --release` of this repository, in
# ${CARGO_TARGET_DIR:-target}.
upsell_bin() {
    if [[ -n ${UPSELL:-} ]]; then
        if [[ $UPSELL == */* ]]; then
            caller_path "$UPSELL"
        else
            printf '%s\n' "$UPSELL"
        fi
        return
    fi
    # `|| return`: a command substitution does not inherit `set -e`.
    (cd "$upsell_repo" && cargo build --release --quiet) >&2 || return
    # cargo takes a relative CARGO_TARGET_DIR from where it runs: the
    # repository root.
    local target=${CARGO_TARGET_DIR:-target}
    case $target in
        /*) printf '%s\n' "$target/release/upsell" ;;
        *) printf '%s\n' "$upsell_repo/$target/release/upsell" ;;
    esac
}

# cpu_model: the CPU's model name, e.g. "AMD EPYC".
cpu_model() {
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs
}

# cpu_cores: "N cores of MODEL", as the scripts' tables name the machine.
cpu_cores() {
    echo "$(nproc) cores of $(cpu_model)"
}

# mem_gib: the machine's total memory in whole GiB, rounded down, as
# `free -g` prints it.
mem_gib() {
    free -g | awk '/Mem:/ {print $2}'
}

# start_server CHECKPOINT ADDR: starts `$upsell serve` on CHECKPOINT at ADDR
# in the background, its stderr in $work/server.log, sets $server to its
# pid and waits for GET /v2/health/ready. When the server is not ready
# within 5 s, or exits before, prints its log and exits 1. Needs $upsell
# and $work; set `server=` and `trap 'stop_server; ...' EXIT` before it.
start_server() {
    local checkpoint=$1 addr=$2 log=$work/server.log _
    "$upsell" serve --checkpoint "$checkpoint" --addr "$addr" 2>"$log" &
    server=$!
    for _ in $(seq 50); do
        curl -sf --max-time 1 "http://$addr/v2/health/ready" >/dev/null && return 0
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$server" 2>/dev/null; then
        echo "error: \`upsell serve --checkpoint $checkpoint --addr $addr\` was not ready within 5 s; its log:" >&2
    else
        echo "error: \`upsell serve --checkpoint $checkpoint --addr $addr\` exited before it was ready; its log:" >&2
    fi
    cat "$log" >&2
    exit 1
}

# stop_server: stops the server that start_server started, if any, and
# waits for it to finish the requests in flight.
stop_server() {
    if [[ -n ${server:-} ]]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
}

# bench_python: prints the Python of the benchmarks' virtual environment
# ($UPSELL_DQ_VENV, default ~/.cache/upsell/dq-venv; a relative path is
# taken from where the script was started), made with LightGBM,
# scikit-learn, pandas and pyarrow when missing.
bench_python() {
    local venv
    venv=$(user_path "${UPSELL_DQ_VENV:-}" "$HOME/.cache/upsell/dq-venv")
    if ! "$venv/bin/python" -c 'import lightgbm, numpy, pandas, pyarrow, sklearn, tomllib' 2>/dev/null; then
        echo "setting up $venv" >&2
        python3 -m venv "$venv" >&2 || return
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            'numpy>=1.26,<3' 'pandas>=2.2,<4' 'pyarrow>=15,<27' 'scikit-learn>=1.4,<2' 'lightgbm>=4.3,<5' >&2 ||
            return
    fi
    printf '%s\n' "$venv/bin/python"
}
