"""Where a policy's decisions lose value, against a synthetic world's truth:
the share of achievable lift of the decisions, of the chosen products each
in its best context, and of the chosen contexts each with the best product;
then, per product, P(convert) predicted over true where the logged offer was
that product and where it was not.

    python scripts/decision_decomposition.py TRUTH.parquet DECISIONS.parquet SCORES.parquet EXPOSURES.parquet

DECISIONS is `upsell recommend`'s output, SCORES `upsell score`'s, both on
EXPOSURES (a part of `upsell synth`'s log) whose truth is TRUTH. Needs numpy
and pyarrow (scripts/decision-quality.sh's environment has both).
"""

import sys

import numpy as np
import pyarrow.parquet as pq


def main():
    truth, rec, scores, logged = (pq.read_table(p).to_pandas() for p in sys.argv[1:5])
    products = [c[len("eligible__"):] for c in truth.columns if c.startswith("eligible__")]
    contexts = sorted({c.split("__", 2)[2] for c in truth.columns
                       if c.startswith("value__") and c.count("__") >= 2})
    n = len(truth)
    value = np.stack([np.stack([truth[f"value__{p}__{c}"].values for c in contexts], 1)
                      for p in products], 1)  # [rows, products, contexts]
    eligible = np.stack([truth[f"eligible__{p}"].values for p in products], 1) > 0
    allowed = np.where(eligible[:, :, None], value, -np.inf)
    random = (np.where(eligible[:, :, None], value, 0).sum((1, 2))
              / (eligible.sum(1) * len(contexts))).mean()
    oracle = allowed.reshape(n, -1).max(1).mean()
    share = lambda v: (v - random) / (oracle - random)
    rows = np.arange(n)
    p = np.array([products.index(o) for o in rec.offer])
    context_columns = [c for c in rec.columns if c not in
                       ("id", "offer", "propensity", "expected_value", "candidates", "holdout")]
    c = np.array([contexts.index("__".join(r)) for r in rec[context_columns].astype(str).values])
    print(f"decisions                         share {share(value[rows, p, c].mean()):.4f}")
    print(f"chosen products, best context     share {share(allowed[rows, p].max(1).mean()):.4f}")
    print(f"chosen contexts, best product     share {share(allowed[rows, :, c].max(1).mean()):.4f}")
    best = allowed.reshape(n, len(products), -1).max(2).argmax(1)
    for j, name in enumerate(products):
        print(f"{name:20s} offered to {np.mean(p == j):.3f} of users, by the oracle {np.mean(best == j):.3f}")
    for j, name in enumerate(products):
        offered = (logged.offer == name).values
        other = ~offered & eligible[:, j]
        predicted, true = scores[f"p_convert__{name}"].values, truth[f"p_convert__{name}"].values
        print(f"{name:20s} predicted / true where offered {predicted[offered].mean() / true[offered].mean():.3f}"
              f", elsewhere {predicted[other].mean() / true[other].mean():.3f}")


if __name__ == "__main__":
    main()
