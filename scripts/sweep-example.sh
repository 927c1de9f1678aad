#!/usr/bin/env bash
# A learning-rate x hidden-size sweep with nothing but `upsell train`: one run
# directory per combination under runs/sweep-example, skipped when it already
# holds a finished summary, then a table sorted by validation conversion AUC.
# `upsell sweep` does the same with parallel trials and a leaderboard.
#
#   sweep-example.sh [TRAIN ARGS...]      e.g. --set train.epochs=3
#
# Run it from the repository root. Uses $UPSELL, else `upsell` on PATH, else
# `cargo run --release --quiet --`.
set -euo pipefail

if [[ -n "${UPSELL:-}" ]]; then
    read -ra upsell <<<"$UPSELL"
elif command -v upsell >/dev/null; then
    upsell=(upsell)
else
    upsell=(cargo run --release --quiet --)
fi
out=runs/sweep-example
mkdir -p "$out"
failed=0

for lr in 0.001 0.003; do
    for hidden in 64 128,64; do
        run="$out/lr-$lr-h-${hidden//,/x}"
        if [[ -f "$run/summary.json" ]]; then
            echo "skip $run: finished" >&2
            continue
        fi
        # Left by an interrupted or failed run; train refuses an existing --out.
        rm -rf "$run"
        echo "train $run" >&2
        if "${upsell[@]}" train "$@" --set "train.lr=$lr" --set "model.hidden=[$hidden]" \
            --out "$run" >"$run.log"; then
            # The summary is train's last stdout line; written last, and
            # renamed into place, it marks the run finished.
            tail -n 1 "$run.log" >"$run/summary.json.tmp"
            mv "$run/summary.json.tmp" "$run/summary.json"
        else
            echo "failed: $run (exit $?); stdout in $run.log" >&2
            failed=1
        fi
    done
done

auc() {
    python3 -c 'import json, sys
auc = json.load(open(sys.argv[1]))["best"]["valid_conversion_auc"]
print("nan" if auc is None else auc)' "$1"
}

printf '\n%-10s %s\n' valid_auc run
for summary in "$out"/*/summary.json; do
    [[ -e "$summary" ]] || continue
    run=${summary%/summary.json}
    printf '%-10s %s\n' "$(auc "$summary")" "${run##*/}"
done | sort -k1,1gr
exit "$failed"
