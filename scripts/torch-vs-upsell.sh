#!/usr/bin/env bash
# upsell's training against a PyTorch (CPU) reference of the same network,
# side by side on the same rows (issue 16): training rows/s and time to
# quality, in alternating runs.
#
#   scripts/torch-vs-upsell.sh [ROWS] [EPOCHS] [PAIRS]
#
# ROWS (default 200000) synthetic rows of the default world (seed
# $UPSELL_TORCH_WORLD_SEED, default 21), written once; EPOCHS (default 5)
# per run; PAIRS (default 3) pairs of runs, `upsell train` and
# scripts/torch_reference.py, alternating (upsell first in odd pairs, PyTorch
# first in even ones). Both sides read one resolved config (`upsell config`),
# so they train the same split (seed 42, 10% held out), preprocessing,
# architecture, objective, optimiser, schedule, batch and threads; the
# compared architecture is pinned whatever the defaults become: encoder
# [256, 128], tower [64], 16-d embeddings (user columns, offer and context),
# batch 1024, ReLU, dropout 0.1, no layer norm, shared bottom, per-product
# conversion heads, offer-aware plan head, one network (model.members=1; see
# torch_reference.py, "Members"), 2 threads, early stopping off (every epoch
# runs). Everything else follows configs/default.toml.
#
# Prints, per run, each epoch's validation conversion loss (upsell's
# `valid_conversion_loss`; the same metric on the same rows in PyTorch) with
# the training seconds so far, and the run's training rows/s (all epochs'
# rows over their training seconds, as `upsell train`'s final line; neither
# side counts preprocessing or validation); then the median over pairs of
# upsell's rows/s over PyTorch's, and time to quality: the threshold is the
# validation conversion loss of the first PyTorch run after min(5, EPOCHS)
# epochs, and each run's time to quality is its training seconds until the
# end of the first epoch whose validation loss is at or below it (so it is
# measured at epoch granularity). GFLOP/s counts the dense layers' FLOPs per
# training row as `upsell bench` does; each side's share is of its own
# library's f32 matmul rate ([2048, 2048] x [2048, 2048], burn's through
# `upsell bench`, PyTorch's through torch), measured after the pairs on the
# same threads.
#
# Every run uses the same seed: the pairs measure the machine's noise, not
# seed-to-seed variation. Run it on a quiet machine: a busy one slows
# PyTorch's OpenMP threads far more than upsell's (the load average is
# printed before and after).
#
# Environment:
#   UPSELL                    a prebuilt binary (else `cargo build --release`)
#   UPSELL_TORCH_THREADS      threads on both sides (default 2)
#   UPSELL_TORCH_MEMBERS      networks per model on both sides (default 1)
#   UPSELL_TORCH_WORLD_SEED   the synthetic world's seed (default 21)
#   UPSELL_TORCH_SET          extra `--set` overrides for both sides, separated
#                             by spaces: "train.lr=0.003 train.warmup_steps=50"
#   UPSELL_TORCH_ARGS         extra arguments of torch_reference.py, e.g.
#                             "--fused-adamw"
#   UPSELL_TORCH_VENV         the PyTorch environment, made when missing
#                             (default ~/.cache/upsell/torch-venv)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rows=${1:-200000}
epochs=${2:-5}
pairs=${3:-3}
threads=${UPSELL_TORCH_THREADS:-2}
members=${UPSELL_TORCH_MEMBERS:-1}
world_seed=${UPSELL_TORCH_WORLD_SEED:-21}
read -r -a extra <<<"${UPSELL_TORCH_SET:-}"
read -r -a torch_args <<<"${UPSELL_TORCH_ARGS:-}"
cd "$(dirname "$0")/.."

upsell=$(upsell_bin)
python=$(python3 scripts/torch_reference.py --venv-python)
machine="$(cpu_cores), $(mem_gib) GiB; $(date -u +%Y-%m-%d)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sets=(
    --set 'model.hidden=[256,128]' --set 'model.tower=[64]'
    --set model.embedding_dim=16 --set model.offer_dim=16
    --set model.activation=relu --set model.dropout=0.1 --set model.layer_norm=false
    --set model.sharing=shared_bottom --set model.wide=false
    --set model.product_heads=true --set model.plan_uses_offer=true
    --set "model.members=$members"
    --set train.backend=flex --set 'train.devices=[]' --set train.batch_size=1024
    --set "train.threads=$threads" --set "train.epochs=$epochs" --set train.patience=0
)
for kv in "${extra[@]}"; do
    sets+=(--set "$kv")
done

echo "load before: $(uptime)" >&2
echo "writing $rows rows (world seed $world_seed)" >&2
"$upsell" synth --rows "$rows" --seed "$world_seed" --out "$work/world" >/dev/null
"$upsell" config --config "$work/world/config.toml" "${sets[@]}" >"$work/config.toml"
"$upsell" prepare --config "$work/config.toml" --out "$work/pre.json" >"$work/prepare.json"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

run_upsell() {
    echo "pair $1: upsell train" >&2
    "$upsell" train --config "$work/config.toml" --out "$work/upsell-$1" >"$work/upsell-$1.json" 2>"$work/upsell-$1.log" || {
        cat "$work/upsell-$1.log" >&2
        exit 1
    }
}
run_torch() {
    echo "pair $1: PyTorch reference" >&2
    "$python" scripts/torch_reference.py --config "$work/config.toml" --preprocessor "$work/pre.json" \
        --threads "$threads" --check-rows "$2" "${torch_args[@]}" >"$work/torch-$1.jsonl"
}
for pair in $(seq "$pairs"); do
    # The first PyTorch run also checks its inputs against reference_scorer.py.
    check=$([[ $pair == 1 ]] && echo 256 || echo 0)
    if ((pair % 2 == 1)); then
        run_upsell "$pair"
        run_torch "$pair" "$check"
    else
        run_torch "$pair" "$check"
        run_upsell "$pair"
    fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# The yardsticks, measured in this run on the same threads: burn's f32
# matmul (`upsell bench`, flex) and PyTorch's, both [2048, 2048] x [2048, 2048].
echo "matrix-multiply rates: burn (upsell bench) and PyTorch" >&2
"$upsell" bench --backend flex --size small --train-rows 2000 --file-rows 2000 --latency-calls 10 \
    --min-seconds 3 --threads "$threads" --work "$work" 2>/dev/null |
    jq -s '[.[] | select(.bench == "matmul" and (.case | contains("[2048, 2048]")))][0].value' >"$work/matmul-burn"
"$python" -c '
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
a @ b
calls, start = 0, time.perf_counter()
while time.perf_counter() - start < 3.0:
    a @ b
    calls += 1
print(2 * 2048**3 * calls / (time.perf_counter() - start) / 1e9)
' "$threads" >"$work/matmul-torch"
# Same rows, same network, same metric: upsell's first checkpoint scored by
# the PyTorch network reproduces its validation loss (and the split).
"$python" scripts/torch_reference.py --config "$work/config.toml" \
    --check-checkpoint "$work/upsell-1/checkpoint" >"$work/check.json" || {
    echo "error: the PyTorch network does not reproduce upsell's checkpoint:" >&2
    cat "$work/check.json" >&2
    exit 1
}

"$python" - "$work" "$pairs" "$epochs" <<'EOF'
import json, statistics, sys
from pathlib import Path

work, pairs, epochs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
prepare = json.loads((work / "prepare.json").read_text())
check = json.loads((work / "check.json").read_text())
runs = []  # (pair, implementation, [(epoch, train seconds so far, valid conversion loss)], rows/s)
setup = None
for pair in range(1, pairs + 1):
    lines = [json.loads(l) for l in (work / f"torch-{pair}.jsonl").read_text().splitlines()]
    setup = setup or next(l for l in lines if l["event"] == "setup")
    epochs_t = [(l["epoch"], l["train_seconds"], l["valid_conversion_loss"]) for l in lines if l["event"] == "epoch"]
    done = next(l for l in lines if l["event"] == "done")
    summary = json.loads((work / f"upsell-{pair}.json").read_text().strip().splitlines()[-1])
    so_far, epochs_u = 0.0, []
    for l in (work / f"upsell-{pair}" / "metrics.jsonl").read_text().splitlines():
        m = json.loads(l)
        so_far += m["seconds"]
        epochs_u.append((m["epoch"], so_far, m["valid_conversion_loss"]))
    order = [("upsell", epochs_u, summary["train_rows_per_sec"]), ("pytorch", epochs_t, done["train_rows_per_sec"])]
    if pair % 2 == 0:
        order.reverse()
    runs += [(pair, *r) for r in order]

first_torch = next(r for r in runs if r[1] == "pytorch")
at = min(5, epochs)
threshold = first_torch[2][at - 1][2]
flops = setup["flops_per_row_train"]


def time_to(epochs_list):
    return next((seconds for _, seconds, loss in epochs_list if loss <= threshold), None)


print(f"train rows {prepare['train_rows']}, validation rows {prepare['valid_rows']}; batch {setup['batch_size']}, "
      f"{setup['steps_per_epoch']} steps per epoch; {setup['members']} member(s) of encoder {setup['hidden']}, tower "
      f"{setup['tower']}, embeddings {setup['embedding_dim']}/{setup['offer_dim']}; {setup['parameters']:,} parameters "
      f"(upsell's checkpoint: {check['parameters_checkpoint']:,}); {flops / 1e3:.0f} kFLOP per training row; "
      f"{setup['threads']} threads; torch {setup['torch']}, AdamW {setup['adamw']}")
print(f"PyTorch network on upsell's first checkpoint: valid conversion loss {check['valid_conversion_loss']:.6f}, "
      f"upsell's {check['valid_conversion_loss_upsell']:.6f}")
print()
print("| pair | implementation | rows/s | GFLOP/s | valid conversion loss by epoch (training seconds so far) | time to quality |")
print("|---|---|---|---|---|---|")
for pair, impl, eps, rate in runs:
    losses = ", ".join(f"{loss:.5f} ({seconds:.1f} s)" for _, seconds, loss in eps)
    t = time_to(eps)
    print(f"| {pair} | {impl} | {rate:,.0f} | {rate * flops / 1e9:.1f} | {losses} | {'not reached' if t is None else f'{t:.1f} s'} |")
print()
rate = {impl: [r for _, i, _, r in runs if i == impl] for impl in ("upsell", "pytorch")}
matmul = {"upsell": float((work / "matmul-burn").read_text()), "pytorch": float((work / "matmul-torch").read_text())}
print("training's share of the matrix-multiply rate measured in this run ([2048, 2048] x [2048, 2048], same threads): "
      f"upsell {statistics.median(rate['upsell']) * flops / 1e9:.1f} GFLOP/s of burn's {matmul['upsell']:.1f} "
      f"({statistics.median(rate['upsell']) * flops / 1e9 / matmul['upsell']:.1%}); "
      f"PyTorch {statistics.median(rate['pytorch']) * flops / 1e9:.1f} GFLOP/s of torch's {matmul['pytorch']:.1f} "
      f"({statistics.median(rate['pytorch']) * flops / 1e9 / matmul['pytorch']:.1%})")
ratios = [u / t for u, t in zip(rate["upsell"], rate["pytorch"])]
print(f"rows/s, median: upsell {statistics.median(rate['upsell']):,.0f}, PyTorch {statistics.median(rate['pytorch']):,.0f}; "
      f"upsell / PyTorch per pair {', '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f}x")
ttq = {impl: [time_to(e) for _, i, e, _ in runs if i == impl] for impl in ("upsell", "pytorch")}
line = f"time to quality (valid conversion loss <= {threshold:.5f}, PyTorch's after {at} epochs of pair 1):"
for impl in ("upsell", "pytorch"):
    reached = [t for t in ttq[impl] if t is not None]
    med = f"median {statistics.median(reached):.1f} s" if reached else "never"
    line += f" {impl} {med} ({len(reached)}/{len(ttq[impl])} runs reached it);"
pairs_both = [(u, t) for u, t in zip(ttq["upsell"], ttq["pytorch"]) if u is not None and t is not None]
if pairs_both:
    line += f" PyTorch / upsell per pair {', '.join(f'{t / u:.2f}' for u, t in pairs_both)}"
print(line.rstrip(";"))
EOF
echo
echo "\`${UPSELL:+UPSELL=<prebuilt upsell> }${UPSELL_TORCH_SET:+UPSELL_TORCH_SET=\"$UPSELL_TORCH_SET\" }${UPSELL_TORCH_ARGS:+UPSELL_TORCH_ARGS=\"$UPSELL_TORCH_ARGS\" }scripts/torch-vs-upsell.sh $rows $epochs $pairs\`:" \
    "world seed $world_seed, $threads threads, members $members. $machine; load average (1, 5, 15 min) $load_before before the runs, $load_after after."
echo "load after: $(uptime)" >&2
