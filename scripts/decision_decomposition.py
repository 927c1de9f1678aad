"""Where a policy's decisions lose value, against a synthetic world's truth:
the share of achievable lift of the decisions, of the chosen products each
in its best context, and of the chosen contexts each with the best product;
then, per product, P(convert) predicted over true where the logged offer was
that product and where it was not.

    python scripts/decision_decomposition.py TRUTH.parquet DECISIONS.parquet SCORES.parquet EXPOSURES.parquet [COST]

COST (default 0) is the contact cost the decisions were made with: every
offer's value is net of it, and "no offer" (`value__none`) competes. With the
truth's `logging_value` and `logging_contact`, the shares are also given
over the logging policy, `(v - logging) / (oracle - logging)`; and the
chosen contexts are counted beside the oracle's.

DECISIONS is `upsell recommend`'s output, SCORES `upsell score`'s, both on
EXPOSURES (a part of `upsell synth`'s log) whose truth is TRUTH. Needs numpy
and pyarrow (scripts/decision-quality.sh's environment has both).
"""

import sys

import numpy as np
import pyarrow.parquet as pq


def main():
    truth, rec, scores, logged = (pq.read_table(p).to_pandas() for p in sys.argv[1:5])
    cost = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    products = [c[len("eligible__"):] for c in truth.columns if c.startswith("eligible__")]
    contexts = sorted({c.split("__", 2)[2] for c in truth.columns
                       if c.startswith("value__") and c.count("__") >= 2})
    n = len(truth)
    value = np.stack([np.stack([truth[f"value__{p}__{c}"].values for c in contexts], 1)
                      for p in products], 1) - cost  # [rows, products, contexts], net
    none = truth["value__none"].values if "value__none" in truth else np.zeros(len(truth))
    eligible = np.stack([truth[f"eligible__{p}"].values for p in products], 1) > 0
    allowed = np.where(eligible[:, :, None], value, -np.inf)
    random = (np.where(eligible[:, :, None], value, 0).sum((1, 2))
              / (eligible.sum(1) * len(contexts))).mean()
    oracle = np.maximum(allowed.reshape(n, -1).max(1), none).mean()
    logging = None
    if "logging_value" in truth and "logging_contact" in truth:
        logging = (truth["logging_value"] - cost * truth["logging_contact"]).mean()
    def share(v):
        over = f", over logging {(v - logging) / (oracle - logging):.4f}" if logging is not None else ""
        return f"{(v - random) / (oracle - random):.4f}{over}"
    rows = np.arange(n)
    offered = rec.offer.notna().values
    p = np.array([products.index(o) if ok else 0 for o, ok in zip(rec.offer, offered)])
    context_columns = [c for c in rec.columns if c not in
                       ("id", "offer", "propensity", "expected_value", "candidates", "holdout")]
    c = np.array([contexts.index("__".join(r)) if o else 0
                  for r, o in zip(rec[context_columns].astype(str).values, offered)])
    pick = lambda v: np.where(offered, v, none).mean()
    print(f"decisions                         share {share(pick(value[rows, p, c]))}")
    print(f"chosen products, best context     share {share(pick(allowed[rows, p].max(1)))}")
    print(f"chosen contexts, best product     share {share(pick(allowed[rows, :, c].max(1)))}")
    best_context = allowed.max(1).argmax(1)
    for k, name in enumerate(contexts):
        print(f"{name:32s} chosen for {np.mean(offered & (c == k)):.3f} of users, by the oracle "
              f"{np.mean(best_context == k):.3f}")
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
