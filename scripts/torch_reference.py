#!/usr/bin/env python3
"""A PyTorch (CPU) reference of upsell's network and training, so that
upsell's training speed and time to quality can be measured side by side
with PyTorch's on the same rows (issue 16).

    python3 scripts/torch_reference.py --config RESOLVED.toml --preprocessor PRE.json \\
        [--data PATH] [--epochs E] [--threads T] [--members M] [--out FILE.jsonl]
    python3 scripts/torch_reference.py --venv-python     # set up the environment, print its python
    python3 scripts/torch_reference.py --config RESOLVED.toml --check-checkpoint RUN/checkpoint

`scripts/torch-vs-upsell.sh` runs it beside `upsell train`. It sets up its
own virtual environment when started by a Python without torch (below).

# What it reproduces

- Config: RESOLVED.toml is `upsell config --config ... --set ...` (every key
  filled in), with the same `--set` overrides as the upsell run. The model
  and training settings are read from it: `model.*` (embedding_dim,
  offer_dim, hidden, tower, activation, dropout, layer_norm,
  plan_uses_offer, product_heads, wide, wide_min_values, members) and `train.*` (epochs,
  batch_size with min_steps_per_epoch, lr, weight_decay, warmup_steps,
  decay, min_lr_ratio, grad_clip, embedding_prior, wide_prior, objective,
  conversion_weight, plan_weight, ipw, ipw_clip). `--epochs`, `--members`
  and `--seed` override the file. Unsupported (refused): `model.sharing =
  "mmoe"`, `train.task_weighting = "uncertainty"`. Early stopping
  (`train.patience`) is not applied: every epoch runs and is reported.
- Rows: the same files (`data.train`, or `--data`), split as
  src/data/split.rs does: a row is held out when
  `xxh3_64(id, seed) >> 11 < valid_fraction * 2^53` (by position when the
  id is null or there is no id column), or the latest fraction by time for
  `split = "time"`, or `data.valid` when set. The script checks that its
  training rows give the preprocessor's fitted means and standard
  deviations, i.e. that it trains on exactly upsell's training rows.
- Inputs: the preprocessing upsell fitted (`upsell prepare --out PRE.json`,
  or a checkpoint's manifest.json / directory), applied as docs/checkpoint.md
  says: standardised numerics, missing flags and bin encodings; vocabulary
  and hashed (xxh3) indices; offer and context indices. The vectorised code
  here is checked row by row against scripts/reference_scorer.py's
  `Features` on a sample of rows (`--check-rows`).
- Network (src/model/network.rs): per member, one user embedding table
  (init N(0, 0.05)), the encoder MLP (Linear -> [LayerNorm] -> ReLU/GELU ->
  dropout), offer table (N(0, 1), burn's default) and context table
  (N(0, 0.05)), the conversion tower on [user, offer, contexts], a
  conversion layer with one output per arm (the row's offer's is used) and
  the plan head on [user, offer]; the optional wide part (zeros, stored /10).
  Linear layers start as in burn: U(-1/sqrt(in), 1/sqrt(in)) for weights
  and biases, which is also PyTorch's nn.Linear default.
- Objective (src/train/step.rs), per member, summed over members: weighted
  BCE over the batch's weights (inverse-propensity ones with train.ipw) +
  masked plan cross-entropy over the batch's weights (objective "joint") or
  the buyers' ("mean"), with conversion_weight / plan_weight, plus
  embedding_prior / training rows * |user table|^2 (and wide_prior * |10
  wide|^2). Gradients clipped to global L2 norm grad_clip per member. AdamW
  (betas 0.9/0.999, eps 1e-8, decoupled weight decay, as burn's); learning
  rate per step: linear warm-up over min(warmup_steps, steps / 10) steps
  to lr (times sqrt(batch / lr_reference_batch) for a batch above it),
  then cosine/linear/none down to min_lr_ratio of that; the same batch size.
  Each epoch shuffles the training rows (torch's generator, not burn's
  ChaCha8 stream) and takes them in batches.
- Validation (src/train/run.rs, src/evaluation/metrics): the members'
  averaged conversion logit of each validation row's own offer, through
  sigmoid (f32), clamped to [1e-7, 1 - 1e-7], row-weighted mean log loss:
  upsell's `valid_conversion_loss`. Likewise `valid_plan_log_loss` (per
  buyer) and `valid_loss` (the objective on the validation rows).

Not reproduced exactly: the random streams (initial weights, dropout masks
and shuffles are drawn from the same distributions, not the same numbers)
and floating-point summation order. `--check-checkpoint DIR` loads an upsell
checkpoint's weights into this network and compares its validation loss with
the one in the checkpoint's manifest, which tests the rows, the split, the
preprocessing, the forward pass and the metric together (to about 1e-6).

# Members

The issue's comparison fixes one network (encoder [256, 128], tower [64],
16-d embeddings, batch 1024): its figures (143-145k rows/s, 454 kFLOP per
training row in benches/cpu.md) are those of a single network. So the
comparison script runs `--members 1` (and `model.members=1` for upsell) by
default; `model.members` (default 3, a seed ensemble trained side by side on
the same batches) can be compared with `--members 3` on both sides
(UPSELL_TORCH_MEMBERS=3 for the script). Both sides then do three networks'
work per row, and rows/s counts rows, not rows x members.

# Output (stdout, one JSON object per line)

1. `{"event": "setup", ...}`: torch version, threads, rows, batch, steps,
   parameters (count, and per tensor in `--verbose`), FLOPs per row of the
   dense layers (forward, and a training step counted as 3x forward, as
   `upsell bench` counts them), preprocessing seconds.
2. `{"event": "epoch", "epoch": E, "seconds": S, "train_seconds": T,
   "train_rows_per_sec": R, "valid_conversion_loss": L, ...}` per epoch:
   `seconds` is the epoch's training time (shuffle, batches, forward,
   backward, clipping, optimiser) and `train_seconds` the sum so far;
   both exclude preprocessing and validation, as upsell's metrics.jsonl
   `seconds` do. `train_rows_per_sec` = epoch rows / seconds.
3. `{"event": "done", "train_rows_per_sec": ..., ...}`: all rows trained over
   all training seconds, as `upsell train`'s final line.

# Environment

Run by a Python that cannot import torch, it creates (once) and re-runs
itself in ${UPSELL_TORCH_VENV:-~/.cache/upsell/torch-venv} with torch, numpy,
pyarrow and xxhash. torch comes from the CPU wheel index
(https://download.pytorch.org/whl/cpu, about 1 GB installed) when that is
reachable, else from the default index (PyPI), whose x86-64 Linux wheel
is a CUDA build with about 4.5 GB of NVIDIA libraries beside it (the same
CPU kernels: MKL, oneDNN; Triton, GPU-only, is removed again). UPSELL_TORCH_SPEC (default "torch") picks the
version, e.g. "torch==2.15.0".
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def venv_dir():
    return Path(os.environ.get("UPSELL_TORCH_VENV") or Path.home() / ".cache/upsell/torch-venv").expanduser()


def have_packages(python):
    probe = "import torch, numpy, pyarrow, xxhash"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_venv():
    """The virtual environment's python, created and filled when missing."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if python.exists() and have_packages(python):
        return python
    log = lambda message: print(f"torch_reference: {message}", file=sys.stderr)
    log(f"setting up {venv}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=sys.stderr)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["numpy>=1.26,<3", "pyarrow>=16,<27", "xxhash>=3,<4"], check=True, stdout=sys.stderr)
    spec = os.environ.get("UPSELL_TORCH_SPEC", "torch")
    cpu = subprocess.run(pip + ["--retries", "1", "--timeout", "30", "--index-url", CPU_INDEX, spec], stdout=sys.stderr)
    if cpu.returncode != 0:
        log(f"{CPU_INDEX} did not serve {spec}; installing it from the default index "
            "(on x86-64 Linux a CUDA build, about 4.7 GB with its NVIDIA libraries; the CPU kernels are the same)")
        subprocess.run(pip + [spec], check=True, stdout=sys.stderr)
        # Triton compiles GPU kernels only: 1 GB that eager CPU training never loads.
        subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "triton"], stdout=sys.stderr)
    if not have_packages(python):
        sys.exit(f"torch_reference: {venv} still cannot import torch, numpy, pyarrow and xxhash")
    return python


def bootstrap():
    """Re-runs this script in the virtual environment unless this Python has
    everything it needs; `--venv-python` only prints that environment's
    python."""
    if "--venv-python" in sys.argv[1:]:
        print(ensure_venv())
        sys.exit(0)
    try:
        import numpy  # noqa: F401
        import pyarrow  # noqa: F401
        import torch  # noqa: F401
        import xxhash  # noqa: F401
    except ImportError:
        python = ensure_venv()
        os.execv(str(python), [str(python), str(Path(__file__).resolve())] + sys.argv[1:])


bootstrap()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tomllib  # noqa: E402
import xxhash  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(HERE))
import reference_scorer  # noqa: E402

OOV, MISSING, RESERVED = reference_scorer.OOV, reference_scorer.MISSING, reference_scorer.RESERVED
WIDE_SCALE = reference_scorer.WIDE_SCALE
USER_EMBEDDING_STD = 0.05  # src/model/network.rs
CONTEXT_EMBEDDING_STD = 0.05
EVAL_CHUNK = 8192  # src/train/run.rs
PROB_EPS = 1e-7  # src/evaluation/metrics/binary.rs
SMALLEST_BATCH = 32  # src/config/sections.rs, batch_rows


def emit(record, out=None):
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


# ---------------------------------------------------------------- data ----


def resolve(path):
    """The data files a path names, sorted (src/data/source.rs)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".parquet", ".pq", ".csv"))
    elif any(c in str(path) for c in "*?["):
        import glob

        files = sorted(Path(f) for f in glob.glob(str(path)))
    else:
        files = [p]
    if not files:
        sys.exit(f"torch_reference: no data files in {path}")
    return files


def read_table(path):
    tables = []
    for f in resolve(path):
        t = pacsv.read_csv(f) if f.suffix.lower() == ".csv" else pq.read_table(f)
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    # string_view (newer Parquet writers) -> string, for compute and to_pylist.
    fields = []
    for field in table.schema:
        if pa.types.is_string_view(field.type) or pa.types.is_large_string(field.type):
            fields.append(pa.field(field.name, pa.string()))
        else:
            fields.append(field)
    return table.cast(pa.schema(fields))


def as_text(column):
    """A column's values as Python strings or None, numbers written as upsell
    compares them (shortest decimal, integral floats without a point)."""
    if pa.types.is_string(column.type):
        return column.to_pylist()
    out = []
    for v in column.to_pylist():
        if v is None:
            out.append(None)
        elif isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def as_float(column):
    """(values as float64 with 0 for nulls, null mask)."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(column, pa.int64())
    null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(pc.cast(column.fill_null(0), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return values, null


def label(column):
    """0/1 labels: integers, floats, booleans or the strings 0/1, true/false, yes/no."""
    if pa.types.is_string(column.type):
        mapping = {"0": 0.0, "false": 0.0, "no": 0.0, "1": 1.0, "true": 1.0, "yes": 1.0}
        values = [mapping[v.strip().lower()] for v in column.to_pylist()]
        return np.asarray(values, dtype=np.float64)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    values, null = as_float(column)
    if null.any():
        sys.exit("torch_reference: null labels (upsell drops or refuses them; this script does not)")
    return values


def split_rows(table, config):
    """(train mask) as src/data/split.rs splits a table."""
    data, columns = config["data"], config["columns"]
    fraction = data["valid_fraction"]
    n = table.num_rows
    if data.get("split", "random") == "time":
        times, null = as_float(table.column(columns["time"]))
        if null.any():
            sys.exit("torch_reference: null times")
        cut = int((1.0 - fraction) * n)
        threshold = np.sort(times)[min(cut, n - 1)]
        return ~(times >= threshold)
    seed = int(config["seed"])
    threshold = int(fraction * float(1 << 53))
    positions = lambda rows: [xxhash.xxh3_64_intdigest(int(r).to_bytes(8, "little"), seed) for r in rows]
    id_column = columns.get("id")
    if id_column:
        ids = table.column(id_column).to_pylist()
        hashes = [
            xxhash.xxh3_64_intdigest(v.encode("utf-8"), seed) if v is not None else positions([row])[0]
            for row, v in enumerate(ids)
        ]
    else:
        hashes = positions(range(n))
    in_valid = np.fromiter(((h >> 11) < threshold for h in hashes), dtype=bool, count=n)
    return ~in_valid


class Rows:
    """Model inputs and targets of a table's rows, as numpy arrays."""

    def __init__(self, pre, columns, table):
        n = table.num_rows
        self.rows = n
        numeric = pre["numeric"]
        width = 2 * len(numeric) + sum(max(len(f.get("bins", [])) - 1, 0) for f in numeric)
        x = np.zeros((n, width), dtype=np.float32)
        b = 2 * len(numeric)
        for j, f in enumerate(numeric):
            values, null = as_float(table.column(f["column"]))
            raw = np.sign(values) * np.log1p(np.abs(values)) if f["log1p"] else values
            x[:, j] = np.where(null, 0.0, (raw - f["mean"]) / f["std"]).astype(np.float32)
            x[:, len(numeric) + j] = null.astype(np.float32)
            edges = f.get("bins", [])
            for lo, hi in zip(edges, edges[1:]):
                x[:, b] = np.where(null, 0.0, np.clip((raw - lo) / (hi - lo), 0.0, 1.0)).astype(np.float32)
                b += 1
        self.numeric = x

        def vocabulary(v, values):
            index = {t: RESERVED + i for i, t in enumerate(v["tokens"])}
            return np.fromiter((MISSING if s is None else index.get(s, OOV) for s in values), dtype=np.int64, count=n)

        def hashed(h, values):
            cache = {}

            def one(s):
                if s is None:
                    return 0
                i = cache.get(s)
                if i is None:
                    i = cache[s] = 1 + xxhash.xxh3_64_intdigest(s.encode("utf-8")) % h["buckets"]
                return i

            return np.fromiter((one(s) for s in values), dtype=np.int64, count=n)

        embedded = [vocabulary(v, as_text(table.column(v["column"]))) for v in pre["categorical"]]
        embedded += [hashed(h, as_text(table.column(h["column"]))) for h in pre["hashed"]]
        self.embedded = np.stack(embedded, axis=1) if embedded else np.zeros((n, 0), dtype=np.int64)

        products = [p["name"] for p in pre["products"]]
        product_index = {name: i for i, name in enumerate(products)}
        no_offer = pre.get("no_offer")
        self.offer = None
        shown = np.ones(n, dtype=bool)
        if pre.get("offer"):
            names = as_text(table.column(pre["offer"]))
            arm = {**product_index, **({no_offer: len(products)} if no_offer is not None else {})}
            try:
                self.offer = np.fromiter((arm[s] for s in names), dtype=np.int64, count=n)
            except KeyError as e:
                sys.exit(f"torch_reference: offer {e} is not a product")
            if no_offer is not None:
                shown = self.offer != len(products)
        context = []
        for v in pre["context"]:
            indices = vocabulary(v, as_text(table.column(v["column"])))
            context.append(np.where(shown, indices, MISSING))
        self.context = np.stack(context, axis=1) if context else np.zeros((n, 0), dtype=np.int64)

        self.converted = label(table.column(columns["converted"])).astype(np.float32)
        plan = columns.get("plan")
        if plan:
            self.plan = np.fromiter(
                (-1 if s is None else product_index[s] for s in as_text(table.column(plan))), dtype=np.int64, count=n
            )
        else:
            self.plan = np.full(n, -1, dtype=np.int64)
        weight = columns.get("weight")
        self.weight = (as_float(table.column(weight))[0] if weight else np.ones(n)).astype(np.float32)
        propensity = columns.get("propensity")
        self.propensity = as_float(table.column(propensity))[0].astype(np.float32) if propensity else None


def check_against_reference(pre, table, rows, sample):
    """The vectorised inputs of the first `sample` rows against
    reference_scorer.Features, row by row."""
    sample = min(sample, table.num_rows)
    if sample == 0:
        return 0
    head = table.slice(0, sample).to_pylist()
    for i, row in enumerate(head):
        f = reference_scorer.Features(pre, row)
        if not np.allclose(f.numeric, rows.numeric[i], rtol=0, atol=1e-6):
            sys.exit(f"torch_reference: numeric inputs of row {i} differ from reference_scorer.py")
        if list(f.embedded) != list(rows.embedded[i]) or list(f.context) != list(rows.context[i]):
            sys.exit(f"torch_reference: indices of row {i} differ from reference_scorer.py")
        if rows.offer is not None and f.offer != rows.offer[i]:
            sys.exit(f"torch_reference: offer of row {i} differs from reference_scorer.py")
    return sample


def check_fitted_moments(pre, table):
    """The fitted means and standard deviations come back from these training
    rows: the split is upsell's."""
    worst = 0.0
    for f in pre["numeric"]:
        values, null = as_float(table.column(f["column"]))
        raw = values[~null]
        if f["log1p"]:
            raw = np.sign(raw) * np.log1p(np.abs(raw))
        if raw.size == 0:
            continue
        mean, std = raw.mean(), raw.std()
        scale = max(abs(f["mean"]), f["std"], 1e-12)
        worst = max(worst, abs(mean - f["mean"]) / scale, abs(std - f["std"]) / max(f["std"], 1e-12))
    if worst > 1e-6:
        sys.exit(
            f"torch_reference: the training rows' moments differ from the fitted preprocessing's by {worst:.2e}: "
            "not the training split upsell fitted on (a different seed, data or valid_fraction?)"
        )
    return worst


# ---------------------------------------------------------- the network ----


class Block(nn.Module):
    def __init__(self, net, inputs, outputs):
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)
        self.norm = nn.LayerNorm(outputs, eps=1e-5) if net["layer_norm"] else None
        self.activation = nn.ReLU() if net["activation"] == "relu" else nn.GELU()
        self.dropout = nn.Dropout(net["dropout"])

    def forward(self, x):
        x = self.linear(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(self.activation(x))


def embedding(rows, dim, std):
    table = nn.Embedding(rows, dim)
    nn.init.normal_(table.weight, 0.0, std)
    return table


class Member(nn.Module):
    def __init__(self, net):
        super().__init__()
        if net.get("experts", 0):
            sys.exit("torch_reference: model.sharing = \"mmoe\" is not reproduced")
        self.products = net["products"]
        arms = net["products"] + (1 if net.get("no_offer") else 0)
        has_offer = net["has_offer"] and net["products"] > 0
        user_rows = sum(net["embedding_sizes"])
        self.user_embedding = embedding(user_rows, net["embedding_dim"], USER_EMBEDDING_STD) if user_rows else None
        width = net["numeric_width"] + len(net["embedding_sizes"]) * net["embedding_dim"]
        self.encoder = nn.ModuleList()
        for h in net["hidden"]:
            self.encoder.append(Block(net, width, h))
            width = h
        user = width
        self.offer_embedding = embedding(arms, net["offer_dim"], 1.0) if has_offer else None
        context_rows = sum(net["context_sizes"])
        self.context_embedding = embedding(context_rows, net["offer_dim"], CONTEXT_EMBEDDING_STD) if context_rows else None
        width = user + (net["offer_dim"] if net["has_offer"] else 0) + len(net["context_sizes"]) * net["offer_dim"]
        self.tower = nn.ModuleList()
        for h in net["tower"]:
            self.tower.append(Block(net, width, h))
            width = h
        outputs = arms if net.get("product_heads") and has_offer else 1
        self.conversion = nn.Linear(width, outputs)
        self.plan_uses_offer = bool(net["plan_uses_offer"] and net["has_offer"])
        plan_input = user + (net["offer_dim"] if self.plan_uses_offer else 0)
        self.plan = nn.Linear(plan_input, net["products"]) if net["products"] > 0 else None
        least = net.get("wide_min_values", 0)
        # The embedded columns with wide biases (ids, by `wide_min_values`).
        self.wide_columns = [j for j, size in enumerate(net["embedding_sizes"]) if net.get("wide") and size >= least]
        wide = (1 + net["products"]) if self.wide_columns else 0
        self.wide = None
        if wide:
            self.wide = nn.Embedding(user_rows, wide)
            nn.init.zeros_(self.wide.weight)

    def forward(self, numeric, embedded, offer, context):
        batch = numeric.shape[0]
        parts = [numeric]
        if self.user_embedding is not None:
            parts.append(self.user_embedding(embedded).reshape(batch, -1))
        x = torch.cat(parts, 1)
        for block in self.encoder:
            x = block(x)
        user = x
        offer_vec = self.offer_embedding(offer) if self.offer_embedding is not None and offer is not None else None
        parts = [user] + ([offer_vec] if offer_vec is not None else [])
        if self.context_embedding is not None:
            parts.append(self.context_embedding(context).reshape(batch, -1))
        h = torch.cat(parts, 1)
        for block in self.tower:
            h = block(h)
        logits = self.conversion(h)
        if logits.shape[1] > 1 and offer is not None:
            conversion = logits.gather(1, offer.reshape(batch, 1)).reshape(batch)
        else:
            conversion = logits.reshape(batch)
        plan = None
        if self.plan is not None:
            plan_in = torch.cat([user, offer_vec], 1) if self.plan_uses_offer and offer_vec is not None else user
            plan = self.plan(plan_in)
        if self.wide is not None:
            sums = self.wide(embedded[:, self.wide_columns]).sum(1) * WIDE_SCALE
            conversion = conversion + sums[:, 0]
            if plan is not None:
                plan = plan + sums[:, 1:]
        return conversion, plan


class Network(nn.Module):
    def __init__(self, net, members):
        super().__init__()
        self.members = nn.ModuleList(Member(net) for _ in range(max(members, 1)))

    def forward(self, *inputs):
        """Members' averaged logits (inference)."""
        outs = [m(*inputs) for m in self.members]
        conversion = torch.stack([c for c, _ in outs]).mean(0)
        plans = [p for _, p in outs]
        plan = torch.stack(plans).mean(0) if all(p is not None for p in plans) else None
        return conversion, plan


def flops_per_row(net, members):
    """Dense-layer FLOPs per row, as src/experiment/bench.rs counts them:
    (forward, training step = 3 x forward)."""

    def dense(width, widths):
        flops = 0.0
        for w in widths:
            flops += 2.0 * width * w
            width = w
        return flops, width

    encoder, user = dense(net["numeric_width"] + len(net["embedding_sizes"]) * net["embedding_dim"], net["hidden"])
    offer = net["offer_dim"] if net["has_offer"] else 0
    tower, last = dense(user + offer + len(net["context_sizes"]) * net["offer_dim"], net["tower"])
    tower += 2.0 * last
    plan_input = user + (net["offer_dim"] if net["plan_uses_offer"] and net["has_offer"] else 0)
    plan = 2.0 * plan_input * net["products"]
    forward = (encoder + tower + plan) * max(members, 1)
    return forward, 3.0 * forward


def burn_names(model, members):
    """This model's parameters under burn's tensor names (docs/checkpoint.md),
    with burn's [input, output] layout for linear weights."""
    out = {}
    for name, p in model.named_parameters():
        t = p.detach()
        out[burn_name(name, members)] = t.t() if is_linear_weight(name, t) else t
    return out


def burn_name(name, members):
    """burn's name of a parameter: no `members.0.` prefix with one member,
    LayerNorm's gamma and beta."""
    burn = name if members > 1 else name[len("members.0.") :]
    return burn.replace("norm.weight", "norm.gamma").replace("norm.bias", "norm.beta")


def is_linear_weight(name, t):
    """A linear map's weight: [output, input] here, [input, output] in burn."""
    return t.dim() == 2 and name.endswith(".weight") and not name.endswith("embedding.weight") and not name.endswith("wide.weight")


def network_config(config, pre, members):
    """The network's shape, as src/train/mod.rs network_config builds it."""
    model, train = config["model"], config["train"]
    if model.get("sharing", "shared_bottom") != "shared_bottom":
        sys.exit("torch_reference: model.sharing = \"mmoe\" is not reproduced")
    if train.get("task_weighting", "fixed") != "fixed":
        sys.exit("torch_reference: train.task_weighting = \"uncertainty\" is not reproduced")
    numeric = pre["numeric"]
    return {
        "numeric_width": 2 * len(numeric) + sum(max(len(f.get("bins", [])) - 1, 0) for f in numeric),
        "embedding_sizes": [len(v["tokens"]) + 2 for v in pre["categorical"]] + [h["buckets"] + 1 for h in pre["hashed"]],
        "context_sizes": [len(v["tokens"]) + 2 for v in pre["context"]],
        "products": len(pre["products"]),
        "has_offer": bool(pre.get("offer")),
        "embedding_dim": model["embedding_dim"],
        "offer_dim": model["offer_dim"],
        "hidden": list(model["hidden"]),
        "tower": list(model["tower"]),
        "activation": model["activation"],
        "dropout": model["dropout"],
        "layer_norm": model["layer_norm"],
        "plan_uses_offer": model["plan_uses_offer"],
        "experts": 0,
        "product_heads": model["product_heads"],
        "members": members,
        "wide": model["wide"],
        "wide_min_values": model.get("wide_min_values", 0),
        "no_offer": pre.get("no_offer") is not None,
    }


# ------------------------------------------------------------ training ----


def peak_lr(train, batch):
    """src/config/sections.rs TrainConfig::peak_lr (the CPU's batch size)."""
    reference = train.get("lr_reference_batch", 0)
    if reference == 0 or batch <= reference:
        return train["lr"]
    return train["lr"] * math.sqrt(batch / reference)


def learning_rate(train, batch, step, total):
    """src/train/step.rs learning_rate."""
    peak = peak_lr(train, batch)
    warmup = min(train["warmup_steps"], total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    floor = peak * train["min_lr_ratio"]
    decay = train["decay"]
    if decay == "none":
        return peak
    if decay == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def tensors(rows):
    t = {
        "numeric": torch.from_numpy(rows.numeric),
        "embedded": torch.from_numpy(rows.embedded + offsets(rows.embedded_sizes)),
        "offer": torch.from_numpy(rows.offer) if rows.offer is not None else None,
        "context": torch.from_numpy(rows.context + offsets(rows.context_sizes)),
        "converted": torch.from_numpy(rows.converted),
        "plan": torch.from_numpy(rows.plan),
        "weight": torch.from_numpy(rows.weight),
    }
    return t


def offsets(sizes):
    return np.cumsum([0] + list(sizes[:-1])).astype(np.int64) if sizes else np.zeros(0, dtype=np.int64)


def validate(model, valid, train_cfg):
    """upsell's validation metrics (src/train/run.rs evaluate)."""
    model.eval()
    conv_sum = weight = plan_sum = plan_weight = 0.0
    n = valid["numeric"].shape[0]
    w_all = valid["weight"].numpy().astype(np.float64)
    buyers_all = 0.0
    with torch.no_grad():
        for start in range(0, n, EVAL_CHUNK):
            s = slice(start, min(start + EVAL_CHUNK, n))
            offer = valid["offer"][s] if valid["offer"] is not None else None
            conversion, plan = model(valid["numeric"][s], valid["embedded"][s], offer, valid["context"][s])
            p = torch.sigmoid(conversion).numpy().astype(np.float64)
            p = np.clip(p, PROB_EPS, 1.0 - PROB_EPS)
            y = valid["converted"][s].numpy().astype(np.float64)
            w = w_all[s]
            conv_sum -= float(np.sum(w * (y * np.log(p) + (1.0 - y) * np.log(1.0 - p))))
            weight += float(w.sum())
            if plan is not None:
                probs = torch.softmax(plan, 1).numpy()
                target = valid["plan"][s].numpy()
                has = target >= 0
                pt = probs[np.arange(len(target))[has], target[has]].astype(np.float64)
                pt = np.clip(pt, PROB_EPS, 1.0 - PROB_EPS)
                plan_sum -= float(np.sum(w[has] * np.log(pt)))
                plan_weight += float(w[has].sum())
                buyers_all += float(w[has].sum())
    model.train()
    conversion_loss = conv_sum / weight
    plan_loss = plan_sum / plan_weight if plan_weight > 0 else None
    share = 1.0 if train_cfg["objective"] == "mean" else buyers_all / max(weight, 1e-12)
    valid_loss = train_cfg["conversion_weight"] * conversion_loss
    if plan_loss is not None:
        valid_loss += train_cfg["plan_weight"] * plan_loss * share
    return {
        "valid_loss": valid_loss,
        "valid_conversion_loss": conversion_loss,
        "valid_plan_log_loss": plan_loss,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="`upsell config` output: every key resolved")
    parser.add_argument("--preprocessor", help="`upsell prepare --out` JSON, or a checkpoint (manifest.json or its directory)")
    parser.add_argument("--data", help="training data instead of data.train")
    parser.add_argument("--epochs", type=int, help="instead of train.epochs")
    parser.add_argument("--members", type=int, help="instead of model.members")
    parser.add_argument("--seed", type=int, help="instead of seed (the split's seed too)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--fused-adamw", action="store_true", help="torch.optim.AdamW(fused=True) instead of the default (foreach)")
    parser.add_argument("--check-rows", type=int, default=256, help="rows checked against reference_scorer.py (0: none)")
    parser.add_argument("--check-checkpoint", metavar="DIR", help="load this upsell checkpoint's weights, compare its validation loss, exit")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    parser.add_argument("--verbose", action="store_true", help="parameter shapes in the setup line")
    parser.add_argument("--venv-python", action="store_true", help="set up the virtual environment, print its python")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = tomllib.loads(Path(args.config).read_text())
    if args.seed is not None:
        config["seed"] = args.seed
    seed = int(config["seed"])
    model_cfg, train_cfg, columns = config["model"], config["train"], config["columns"]
    members = args.members if args.members is not None else int(model_cfg.get("members", 1))
    epochs = args.epochs if args.epochs is not None else int(train_cfg["epochs"])

    checkpoint = None
    pre_source = args.preprocessor or args.check_checkpoint
    if not pre_source:
        sys.exit("torch_reference: --preprocessor (or --check-checkpoint) is required")
    pre_path = Path(pre_source)
    if pre_path.is_dir():
        pre_path = pre_path / "manifest.json"
    pre = json.loads(pre_path.read_text())
    if "preprocessor" in pre:
        pre = pre["preprocessor"]
    if args.check_checkpoint:
        checkpoint = reference_scorer.load(args.check_checkpoint)

    prep_start = time.perf_counter()
    data_path = args.data or config["data"].get("train")
    if not data_path:
        sys.exit("torch_reference: no data.train in the config and no --data (upsell's built-in data is not reproduced)")
    table = read_table(data_path)
    if config["data"].get("valid"):
        train_table, valid_table = table, read_table(config["data"]["valid"])
    else:
        mask = split_rows(table, config)
        train_table, valid_table = table.filter(pa.array(mask)), table.filter(pa.array(~mask))
    worst = check_fitted_moments(pre, train_table)
    train_rows, valid_rows = Rows(pre, columns, train_table), Rows(pre, columns, valid_table)
    checked = check_against_reference(pre, train_table, train_rows, args.check_rows)
    net = network_config(config, pre, members)
    for r in (train_rows, valid_rows):
        r.embedded_sizes, r.context_sizes = net["embedding_sizes"], net["context_sizes"]
    train, valid = tensors(train_rows), tensors(valid_rows)
    prep_seconds = time.perf_counter() - prep_start

    torch.manual_seed(seed)
    model = Network(net, members)
    forward_flops, train_flops = flops_per_row(net, members)
    parameters = sum(p.numel() for p in model.parameters())

    if checkpoint is not None:
        manifest, weights = checkpoint
        want = manifest["network"]
        net_ck = dict(net, members=want.get("members", 1))
        model = Network(net_ck, net_ck["members"])
        mine = burn_names(model, net_ck["members"])
        if sorted(mine) != sorted(weights) or any(tuple(mine[k].shape) != tuple(weights[k].shape) for k in mine):
            sys.exit(
                "torch_reference: the checkpoint's tensors differ from this network's:\n"
                f"  checkpoint: {sorted((k, tuple(v.shape)) for k, v in weights.items())}\n"
                f"  here:       {sorted((k, tuple(v.shape)) for k, v in mine.items())}"
            )
        with torch.no_grad():
            by_name = dict(model.named_parameters())
            for name, p in by_name.items():
                w = torch.from_numpy(np.array(weights[burn_name(name, net_ck["members"])]))
                p.copy_(w.t() if is_linear_weight(name, p) else w)
        metrics = validate(model, valid, train_cfg)
        expected = manifest["metrics"]["valid_conversion_loss"]
        diff = abs(metrics["valid_conversion_loss"] - expected)
        emit(
            {
                "event": "check_checkpoint",
                "checkpoint": str(args.check_checkpoint),
                "tensors": len(weights),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "parameters_checkpoint": int(sum(int(np.prod(v.shape)) for v in weights.values())),
                "train_rows": train_rows.rows,
                "valid_rows": valid_rows.rows,
                "valid_conversion_loss": metrics["valid_conversion_loss"],
                "valid_conversion_loss_upsell": expected,
                "difference": diff,
                "valid_plan_log_loss": metrics["valid_plan_log_loss"],
                "valid_plan_log_loss_upsell": manifest["metrics"].get("valid_plan_log_loss"),
            }
        )
        sys.exit(0 if diff <= 1e-5 else 1)

    rows = train_rows.rows
    batch_size = train_cfg["batch_size"]
    if train_cfg.get("min_steps_per_epoch", 0):
        batch_size = min(max(-(-rows // train_cfg["min_steps_per_epoch"]), SMALLEST_BATCH), batch_size)
    steps_per_epoch = -(-rows // batch_size)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=train_cfg["lr"],
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=train_cfg["weight_decay"],
        **({"fused": True} if args.fused_adamw else {}),
    )
    embedding_prior = train_cfg["embedding_prior"] / max(rows, 1)
    wide_prior = train_cfg.get("wide_prior", 0.0) / max(rows, 1)
    ipw = None
    if train_cfg.get("ipw"):
        if train_rows.propensity is None:
            sys.exit("torch_reference: train.ipw needs columns.propensity")
        w = train_rows.weight.astype(np.float64)
        raw = w * np.minimum(1.0 / train_rows.propensity.astype(np.float64), train_cfg["ipw_clip"])
        ipw = torch.from_numpy((raw * (w.sum() / max(raw.sum(), np.finfo(float).tiny))).astype(np.float32))
    cw, pw = train_cfg["conversion_weight"], train_cfg["plan_weight"]
    mean_objective = train_cfg["objective"] == "mean"
    grad_clip = train_cfg["grad_clip"]

    setup = {
        "event": "setup",
        "implementation": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_rows": rows,
        "valid_rows": valid_rows.rows,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "members": members,
        "hidden": net["hidden"],
        "tower": net["tower"],
        "embedding_dim": net["embedding_dim"],
        "offer_dim": net["offer_dim"],
        "parameters": parameters,
        "flops_per_row_forward": forward_flops,
        "flops_per_row_train": train_flops,
        "preprocessing_seconds": prep_seconds,
        "rows_checked_against_reference_scorer": checked,
        "fitted_moments_max_rel_diff": worst,
        "adamw": "fused" if args.fused_adamw else "default",
    }
    if args.verbose:
        setup["tensors"] = {k: list(v.shape) for k, v in burn_names(model, members).items()}
    out = open(args.out, "a") if args.out else None
    emit(setup, out)

    generator = torch.Generator().manual_seed(seed)
    step = 0
    train_seconds = 0.0
    rows_trained = 0
    model.train()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(rows, generator=generator)
        x_num = train["numeric"][order]
        x_emb = train["embedded"][order]
        x_off = train["offer"][order] if train["offer"] is not None else None
        x_ctx = train["context"][order]
        y_conv = train["converted"][order]
        y_plan = train["plan"][order]
        y_w = train["weight"][order]
        c_w = ipw[order] if ipw is not None else y_w
        conv_sum = torch.zeros(())
        plan_sum = torch.zeros(())
        for begin in range(0, rows, batch_size):
            s = slice(begin, min(begin + batch_size, rows))
            n = s.stop - s.start
            offer = x_off[s] if x_off is not None else None
            target, weight, cweight = y_plan[s], y_w[s], c_w[s]
            has_plan = target >= 0
            plan_mask = weight * has_plan
            conv_norm = cweight.sum().clamp_min(1e-12)
            plan_norm = (plan_mask.sum() if mean_objective else weight.sum()).clamp_min(1e-12)
            plan_index = target.clamp_min(0)
            total = None
            conv_detached = plan_detached = 0.0
            for member in model.members:
                conversion, plan = member(x_num[s], x_emb[s], offer, x_ctx[s])
                conv_loss = F.binary_cross_entropy_with_logits(conversion, y_conv[s], weight=cweight, reduction="sum") / conv_norm
                loss = cw * conv_loss
                if plan is not None:
                    plan_loss = (F.cross_entropy(plan, plan_index, reduction="none") * plan_mask).sum() / plan_norm
                    loss = loss + pw * plan_loss
                    plan_detached = plan_detached + plan_loss.detach()
                if embedding_prior > 0 and member.user_embedding is not None:
                    loss = loss + member.user_embedding.weight.square().sum() * embedding_prior
                if wide_prior > 0 and member.wide is not None:
                    loss = loss + (member.wide.weight * WIDE_SCALE).square().sum() * wide_prior
                total = loss if total is None else total + loss
                conv_detached = conv_detached + conv_loss.detach()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if grad_clip > 0:
                for member in model.members:
                    torch.nn.utils.clip_grad_norm_(member.parameters(), grad_clip)
            lr = learning_rate(train_cfg, batch_size, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            step += 1
            conv_sum += conv_detached * (n / len(model.members))
            plan_sum += plan_detached * (n / len(model.members))
        seconds = time.perf_counter() - start
        train_seconds += seconds
        rows_trained += rows
        metrics = validate(model, valid, train_cfg)
        emit(
            {
                "event": "epoch",
                "implementation": "pytorch",
                "epoch": epoch,
                "lr": lr,
                "seconds": seconds,
                "train_seconds": train_seconds,
                "train_rows_per_sec": rows / seconds,
                "train_conversion_loss": float(conv_sum) / rows,
                "train_plan_loss": float(plan_sum) / rows if model.members[0].plan is not None else None,
                **metrics,
            },
            out,
        )
    emit(
        {
            "event": "done",
            "implementation": "pytorch",
            "epochs": epochs,
            "train_seconds": train_seconds,
            "train_rows_per_sec": rows_trained / train_seconds,
            "valid_conversion_loss": metrics["valid_conversion_loss"],
        },
        out,
    )


if __name__ == "__main__":
    main()
