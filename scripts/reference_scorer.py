"""A reference scorer for upsell checkpoints, in Python with numpy: what
docs/checkpoint.md specifies, written out, so that a checkpoint can be
served without upsell and the spec is tested against the Rust scorer.

    python3 scripts/reference_scorer.py CHECKPOINT_DIR ROWS.csv [--expected EXPECTED.csv]

Prints one CSV row per input row: p_convert (for the row's offer, empty
without one), then p_convert__<product> and p_plan__<product> for every
product, as `upsell score` does. With --expected (a file `upsell score`
wrote, such as checkpoints/demo/expected.csv), prints the largest difference
instead and exits 1 if it exceeds 1e-5.

Needs numpy and xxhash (`pip install numpy xxhash`).
"""

import argparse
import csv
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import xxhash

FORMAT_VERSION = 3
# Categorical indices 0 and 1 are reserved: an unseen value and a null.
OOV, MISSING, RESERVED = 0, 1, 2
# The wide part's biases are stored divided by this.
WIDE_SCALE = 10.0
LAYER_NORM_EPSILON = 1e-5


def load_safetensors(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {entry['dtype']}, expected F32")
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[base + start : base + end], dtype="<f4").reshape(entry["shape"])
    return tensors


def load(directory):
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{directory}: format version {manifest['format_version']} is newer than {FORMAT_VERSION}")
    weights = directory / manifest["weights"]["file"]
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != manifest["weights"]["sha256"]:
        raise ValueError(f"{weights}: sha256 {digest}, the manifest says {manifest['weights']['sha256']}")
    return manifest, load_safetensors(weights)


class Features:
    """One row's model inputs, as the preprocessing in the manifest makes them."""

    def __init__(self, pre, row):
        numeric = pre["numeric"]
        values, flags, bins = [], [], []
        for feature in numeric:
            x = number(row.get(feature["column"]))
            if x is None:
                values.append(0.0)
                flags.append(1.0)
            else:
                raw = math.copysign(math.log1p(abs(x)), x) if feature["log1p"] else x
                values.append((raw - feature["mean"]) / feature["std"])
                flags.append(0.0)
            edges = feature.get("bins", [])
            for lo, hi in zip(edges, edges[1:]):
                bins.append(0.0 if x is None else min(max((raw - lo) / (hi - lo), 0.0), 1.0))
        self.numeric = np.array(values + flags + bins, dtype=np.float32)
        self.embedded = [vocabulary_index(v, text(row.get(v["column"]))) for v in pre["categorical"]]
        self.embedded += [hashed_index(h, text(row.get(h["column"]))) for h in pre["hashed"]]
        self.context = [vocabulary_index(v, text(row.get(v["column"]))) for v in pre["context"]]
        names = [p["name"] for p in pre["products"]]
        offer = text(row.get(pre["offer"])) if pre.get("offer") else None
        if offer is not None and offer == pre.get("no_offer"):
            # The no-offer arm, whose context is missing whatever the row says.
            self.offer = len(names)
            self.context = [MISSING] * len(self.context)
        else:
            self.offer = names.index(offer) if offer is not None else None


def number(value):
    if value is None or value == "":
        return None
    return float(value)


def text(value):
    return None if value is None or value == "" else str(value)


def vocabulary_index(vocabulary, value):
    if value is None:
        return MISSING
    try:
        return RESERVED + vocabulary["tokens"].index(value)
    except ValueError:
        return OOV


def hashed_index(feature, value):
    if value is None:
        return 0
    return 1 + xxhash.xxh3_64_intdigest(value.encode("utf-8")) % feature["buckets"]


def activation(name, x):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    raise ValueError(f"unknown activation {name}")


class Member:
    """One network of the ensemble; `w` maps a tensor name to its array."""

    def __init__(self, net, w):
        self.net, self.w = net, w
        self.user_offsets = np.cumsum([0] + net["embedding_sizes"][:-1])
        self.context_offsets = np.cumsum([0] + net["context_sizes"][:-1])

    def block(self, name, x, hidden=True):
        y = x @ self.w[f"{name}.linear.weight"] + self.w[f"{name}.linear.bias"]
        if f"{name}.norm.gamma" in self.w:
            mean, var = y.mean(), y.var()
            y = (y - mean) / np.sqrt(var + LAYER_NORM_EPSILON) * self.w[f"{name}.norm.gamma"]
            y = y + self.w.get(f"{name}.norm.beta", 0.0)
        return activation(self.net["activation"], y) if hidden else y

    def linear(self, name, x):
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def encode(self, f):
        parts = [f.numeric]
        for j, index in enumerate(f.embedded):
            parts.append(self.w["user_embedding.weight"][self.user_offsets[j] + index])
        x = np.concatenate(parts).astype(np.float32)
        if self.net.get("experts", 0) == 0:
            for i in range(len(self.net["hidden"])):
                x = self.block(f"encoder.{i}", x)
            return x, x
        outputs = []
        for k in range(self.net["experts"]):
            h = x
            for i in range(len(self.net["hidden"])):
                h = self.block(f"experts.experts.{k}.{i}", h)
            outputs.append(h)
        outputs = np.stack(outputs)

        def mix(gate):
            g = self.linear(f"experts.{gate}", x)
            g = np.exp(g - g.max())
            return (g / g.sum()) @ outputs

        return mix("conversion_gate"), mix("plan_gate")

    def wide(self, f):
        if "wide.weight" not in self.w:
            return None
        least = self.net.get("wide_min_values", 0)
        sums = sum(
            self.w["wide.weight"][self.user_offsets[j] + index]
            for j, index in enumerate(f.embedded)
            if self.net["embedding_sizes"][j] >= least
        )
        return sums * WIDE_SCALE

    def logits(self, f):
        """Conversion logits for every product (then the no-offer arm's, with
        every context missing, when the network has one), and plan logits
        (or None)."""
        user, plan_user = self.encode(f)
        products = self.net["products"]
        offers = self.w.get("offer_embedding.weight")

        def convert(p, context_indices):
            context = [self.w["context_embedding.weight"][self.context_offsets[j] + i] for j, i in enumerate(context_indices)]
            h = np.concatenate([user] + ([offers[p]] if offers is not None else []) + context)
            for i in range(len(self.net["tower"])):
                h = self.block(f"tower.{i}", h)
            out = self.linear("conversion", h)
            return out[p] if out.shape[0] > 1 else out[0]

        conversion = [convert(p, f.context) for p in range(products if offers is not None else 1)]
        if self.net.get("no_offer") and offers is not None:
            conversion.append(convert(products, [MISSING] * len(f.context)))
        conversion = np.array(conversion, dtype=np.float32)
        plan = None
        if "plan.weight" in self.w:
            x = plan_user
            if self.net["plan_uses_offer"] and offers is not None and f.offer is not None:
                x = np.concatenate([x, offers[f.offer]])
            if x.shape[0] == self.w["plan.weight"].shape[0]:
                plan = self.linear("plan", x)
        wide = self.wide(f)
        if wide is not None:
            conversion = conversion + wide[0]
            if plan is not None:
                plan = plan + wide[1:]
        return conversion, plan


def members(net, tensors):
    if net.get("members", 1) <= 1:
        return [Member(net, tensors)]
    out = []
    for m in range(net["members"]):
        prefix = f"members.{m}."
        out.append(Member(net, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}))
    return out


def calibrated_conversion(calibration, logit, product):
    if calibration is None:
        return 1.0 / (1.0 + math.exp(-logit))
    temperatures = calibration["conversion_temperature"]
    t = temperatures[0] if len(temperatures) == 1 else (temperatures[product] if product is not None else 1.0)
    p = 1.0 / (1.0 + math.exp(-logit / t))
    iso = calibration.get("isotonic")
    if iso:
        p = float(np.interp(p, iso["x"], iso["y"]))
    return p


def calibrated_plan(calibration, logits):
    t = calibration["plan_temperature"] if calibration else 1.0
    z = logits.astype(np.float64) / t
    z = np.exp(z - z.max())
    return z / z.sum()


def score(manifest, tensors, row):
    pre, net = manifest["preprocessor"], manifest["network"]
    calibration = manifest.get("calibration")
    f = Features(pre, row)
    per_member = [m.logits(f) for m in members(net, tensors)]
    conversion = np.mean([c for c, _ in per_member], axis=0)
    plans = [p for _, p in per_member]
    plan = np.mean(plans, axis=0) if all(p is not None for p in plans) else None
    p_convert = [calibrated_conversion(calibration, float(z), j) for j, z in enumerate(conversion)]
    p_plan = list(calibrated_plan(calibration, plan)) if plan is not None else []
    p_offer = p_convert[f.offer] if f.offer is not None else None
    return p_offer, p_convert, p_plan


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("rows")
    parser.add_argument("--expected")
    args = parser.parse_args()
    manifest, tensors = load(args.checkpoint)
    products = [p["name"] for p in manifest["preprocessor"]["products"]]
    with open(args.rows, newline="") as file:
        rows = list(csv.DictReader(file))
    scored = [score(manifest, tensors, row) for row in rows]
    offers = products + ([manifest["preprocessor"]["no_offer"]] if manifest["network"].get("no_offer") else [])
    header = ["p_convert"] + [f"p_convert__{p}" for p in offers] + [f"p_plan__{p}" for p in products]
    if not args.expected:
        out = csv.writer(sys.stdout)
        out.writerow(header)
        for p_offer, p_convert, p_plan in scored:
            out.writerow(["" if p_offer is None else p_offer] + p_convert + p_plan)
        return
    with open(args.expected, newline="") as file:
        expected = list(csv.DictReader(file))
    if len(expected) != len(scored):
        sys.exit(f"{args.expected}: {len(expected)} rows, {args.rows} has {len(scored)}")
    worst = (0.0, None)
    for i, (want, (p_offer, p_convert, p_plan)) in enumerate(zip(expected, scored)):
        got = dict(zip(header, [p_offer] + p_convert + p_plan))
        for column, value in got.items():
            if column not in want or want[column] == "" or value is None:
                continue
            diff = abs(float(want[column]) - value)
            if diff > worst[0]:
                worst = (diff, f"row {i}, {column}")
    print(f"reference scorer: {len(scored)} rows, largest difference {worst[0]:.2e} ({worst[1]})")
    if worst[0] > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
