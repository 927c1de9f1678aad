"""Is choosing the surface and message per user learnable from a log of this
size? A check beside the model: a logistic regression of the conversion on
every feature crossed with every context value, fitted on the offered rows
of the training log with a trained checkpoint's logit as its offset (so it
learns only what the network left out), its L2 penalty picked by 5-fold
cross-validation. Its contexts then replace the policy's, for the products
the policy chose, on a held-out part of a synthetic world, and the truth
scores both.

    python scripts/context_glm.py UPSELL CHECKPOINT CONFIG TRAIN EVAL TRUTH [COST]

UPSELL is the binary, CHECKPOINT a checkpoint trained on TRAIN (a log file
or directory, as `upsell train --data` takes it) with CONFIG, EVAL one file
of the same world's log and TRUTH its truth file (`upsell synth` writes
both); COST (default 0) the contact cost the decisions are made and valued
at. Prints, per penalty, the cross-validated change in log loss and the
share of achievable lift (and, with the truth's logging columns, of the
oracle's lift over the logging policy) of the policy's products in the
regression's contexts; the penalty cross-validation picks is marked, the
others are hindsight. The truth is read as scripts/decision_decomposition.py
reads it. Needs numpy, pandas and pyarrow
(scripts/decision-quality.sh's environment has them).
"""

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from decision_decomposition import TruthValues, policy_choices

PENALTIES = [1e1, 1e2, 1e3, 3e3, 1e4, 1e5]
# Categorical columns with more values than this stay out of the crosses.
MAX_LEVELS = 12


def read(path: str) -> pd.DataFrame:
    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def score(upsell: str, checkpoint: str, frame: pd.DataFrame, work: Path) -> pd.DataFrame:
    source, out = work / "in.parquet", work / "out.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)
    subprocess.run([upsell, "score", "--checkpoint", checkpoint, "--input", str(source),
                    "--output", str(out), "--force"], check=True, capture_output=True)
    return pq.read_table(out).to_pandas()


class Features:
    """Standardised numerics (log1p where the config says) and one-hot
    low-cardinality categoricals, fitted on the training rows."""

    def __init__(self, config: dict, frame: pd.DataFrame):
        columns = config["columns"]
        self.numeric = columns.get("numeric", [])
        self.log1p = set(config.get("preprocess", {}).get("log1p", []))
        self.levels = {c: sorted(frame[c].dropna().astype(str).unique())
                       for c in columns.get("categorical", [])
                       if frame[c].nunique() <= MAX_LEVELS}
        x = self.raw(frame)
        self.mean, self.sd = x.mean(), x.std() + 1e-9

    def raw(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[self.numeric].astype(float).copy()
        for c in self.log1p & set(self.numeric):
            x[c] = np.sign(x[c]) * np.log1p(x[c].abs())
        return x

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        x = ((self.raw(frame) - self.mean) / self.sd).fillna(0.0).to_numpy()
        hot = [(frame[c].astype(str) == v).to_numpy(float)[:, None]
               for c, values in self.levels.items() for v in values]
        return np.hstack([x, *hot])


def crosses(x: np.ndarray, contexts: dict, frame_contexts: dict) -> np.ndarray:
    """Every feature times every context column's every value."""
    blocks = []
    for column, values in contexts.items():
        hot = np.stack([frame_contexts[column] == v for v in values], 1).astype(float)
        blocks.append((x[:, :, None] * hot[:, None, :]).reshape(len(x), -1))
    return np.hstack(blocks)


def fit(z, y, offset, penalty, iterations=30):
    """L2-penalised logistic regression with an offset, by Newton's method."""
    b = np.zeros(z.shape[1])
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(offset + z @ b)))
        step = np.linalg.solve((z * (q * (1 - q))[:, None]).T @ z + penalty * np.eye(len(b)),
                               z.T @ (q - y) + penalty * b)
        b -= step
        if np.abs(step).max() < 1e-8:
            break
    return b


def log_loss(z, y, offset, b):
    q = np.clip(1 / (1 + np.exp(-(offset + z @ b))), 1e-9, 1 - 1e-9)
    return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))


def main():
    upsell, checkpoint, config_path, train_path, eval_path, truth_path = sys.argv[1:7]
    cost = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    config = tomllib.loads(Path(config_path).read_text())
    columns = config["columns"]
    offer, converted = columns["offer"], columns["converted"]
    none = columns.get("no_offer")
    context_columns = columns["context"]
    work = Path(tempfile.mkdtemp())

    train = read(train_path)
    p = score(upsell, checkpoint, train, work)["p_convert"].to_numpy().clip(1e-6, 1 - 1e-6)
    offered = (train[offer] != none).to_numpy() if none else np.ones(len(train), bool)
    train, p = train[offered].reset_index(drop=True), p[offered]
    contexts = {c: sorted(train[c].dropna().astype(str).unique()) for c in context_columns}
    features = Features(config, train)
    z = crosses(features(train), contexts, {c: train[c].astype(str).to_numpy() for c in contexts})
    y, offset = train[converted].astype(float).to_numpy(), np.log(p / (1 - p))

    fold = np.random.default_rng(0).integers(0, 5, len(y))
    cv = {}
    for penalty in PENALTIES:
        cv[penalty] = np.mean([
            log_loss(z[fold == k], y[fold == k], offset[fold == k],
                     fit(z[fold != k], y[fold != k], offset[fold != k], penalty))
            - log_loss(z[fold == k], y[fold == k], offset[fold == k], np.zeros(z.shape[1]))
            for k in range(5)])
    chosen = min(cv, key=cv.get)

    held = read(eval_path)
    decisions = work / "decisions.parquet"
    subprocess.run([upsell, "recommend", "--checkpoint", checkpoint, "--input", eval_path,
                    "--output", str(decisions), "--force", "--set", f"policy.contact_cost={cost}"],
                   check=True, capture_output=True)
    t = TruthValues(pq.read_table(truth_path).to_pandas(), cost)
    made, chosen_product, chosen_context = policy_choices(pq.read_table(decisions).to_pandas(), t)
    # The model's P(convert) of every product in every context: [rows, products, contexts].
    logits = []
    for key in t.contexts:
        frame = held.copy()
        frame[offer] = t.products[0]  # any offer: a no-offer row's context is not read
        for c, v in zip(context_columns, key.split("__")):
            frame[c] = v
        s = score(upsell, checkpoint, frame, work)
        q = np.stack([s[f"p_convert__{k}"].to_numpy() for k in t.products], 1).clip(1e-6, 1 - 1e-6)
        logits.append(np.log(q / (1 - q)))
    logits = np.stack(logits, 2)
    x_held = features(held)
    n, rows = len(held), np.arange(len(held))
    worth = lambda context: np.where(made, t.value[rows, chosen_product, context], t.none).mean()
    print(f"offered training rows {len(y)}, crossed features {z.shape[1]}")
    print(f"the policy's decisions                  share {t.share(worth(chosen_context))}")
    best = np.where(made, t.allowed[rows, chosen_product].max(1), t.none).mean()
    print(f"its products, each in its best context  share {t.share(best)}")
    for penalty in PENALTIES:
        b = fit(z, y, offset, penalty)
        adjust = np.stack([crosses(x_held, contexts, {c: np.full(n, v) for c, v
                                                      in zip(context_columns, key.split("__"))}) @ b
                           for key in t.contexts], 1)
        context = (logits[rows, chosen_product] + adjust).argmax(1)
        mark = "  <- cross-validation's choice" if penalty == chosen else ""
        print(f"penalty {penalty:8g}: cv log loss {cv[penalty] * 1e5:+7.2f}e-5, "
              f"its contexts: share {t.share(worth(context))}{mark}")


if __name__ == "__main__":
    main()
