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


class TruthValues:
    """A truth file's values per user, product and context, net of the
    contact cost, with the yardsticks a policy's value is shared between.
    context_glm.py reads it too."""

    def __init__(self, truth, cost: float):
        self.products = [c[len("eligible__"):] for c in truth.columns if c.startswith("eligible__")]
        self.contexts = sorted({c.split("__", 2)[2] for c in truth.columns
                                if c.startswith("value__") and c.count("__") >= 2})
        n = len(truth)
        # [rows, products, contexts], net of the cost.
        self.value = np.stack([np.stack([truth[f"value__{p}__{c}"].values for c in self.contexts], 1)
                               for p in self.products], 1) - cost
        self.none = truth["value__none"].values if "value__none" in truth else np.zeros(n)
        self.eligible = np.stack([truth[f"eligible__{p}"].values for p in self.products], 1) > 0
        self.allowed = np.where(self.eligible[:, :, None], self.value, -np.inf)
        self.random = (np.where(self.eligible[:, :, None], self.value, 0).sum((1, 2))
                       / (self.eligible.sum(1) * len(self.contexts))).mean()
        self.oracle = np.maximum(self.allowed.reshape(n, -1).max(1), self.none).mean()
        self.logging = None
        if "logging_value" in truth and "logging_contact" in truth:
            self.logging = (truth["logging_value"] - cost * truth["logging_contact"]).mean()

    def share(self, v: float) -> str:
        over = (f", over logging {(v - self.logging) / (self.oracle - self.logging):.4f}"
                if self.logging is not None else "")
        return f"{(v - self.random) / (self.oracle - self.random):.4f}{over}"


def policy_choices(rec, t: TruthValues):
    """`upsell recommend`'s decisions as (offered, product index, context
    index) per user; the indices are 0 where no offer is made."""
    offered = rec.offer.notna().values
    p = np.array([t.products.index(o) if ok else 0 for o, ok in zip(rec.offer, offered)])
    context_columns = [c for c in rec.columns if c not in
                       ("id", "offer", "propensity", "expected_value", "candidates", "holdout")]
    c = np.array([t.contexts.index("__".join(r)) if o else 0
                  for r, o in zip(rec[context_columns].astype(str).values, offered)])
    return offered, p, c


def main():
    truth, rec, scores, logged = (pq.read_table(p).to_pandas() for p in sys.argv[1:5])
    cost = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    t = TruthValues(truth, cost)
    products, contexts = t.products, t.contexts
    value, none, eligible, allowed, share = t.value, t.none, t.eligible, t.allowed, t.share
    n, rows = len(truth), np.arange(len(truth))
    offered, p, c = policy_choices(rec, t)
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
