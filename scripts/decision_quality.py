#!/usr/bin/env python3
"""Decision quality on a synthetic world with known truth: the offers that
`upsell recommend` picks beside baselines trained on the same rows, all
scored against the truth by one metric implementation.

    python3 scripts/decision_quality.py --world DIR [--test-file I] \\
        [--upsell DECISIONS.parquet ... --upsell-scores SCORES.parquet ...] \\
        [--seeds 1 2 3] [--contact-cost C] [--out results.json]

`scripts/decision-quality.sh` sets up the Python environment, writes the
world, trains upsell and runs this script. Needs numpy, pandas, pyarrow,
scikit-learn and lightgbm.

# The world (`upsell synth --out DIR --rows-per-file K`)

- `DIR/exposures/part-NNNNN.parquet`: logged exposures (features, `offer`,
  the context columns, `converted`, `plan`). In a world with a randomised
  no-offer holdout, a holdout row's `offer` is `columns.no_offer` (e.g.
  "none") and its context columns are null; its outcome is organic (a user
  may buy with no offer), as treated rows' outcomes may be too.
- `DIR/config.toml`: upsell's config; the column roles (`columns.no_offer`
  only in a world with a holdout arm), the context columns (in order) and
  the products with their prices are read from it.
- `DIR/truth/part-NNNNN.parquet`: the same rows in the same order, with, per
  product P (and, for the per-context columns, every context combination
  S__M of the context columns' values, in `columns.context` order):
  `p_convert__P`, `bayes_p_convert__P` (P(convert) in the logged context,
  true and knowing only the observed features), `p_plan__P` (true
  P(plan = P | convert, logged offer)), `eligible__P` (1.0 when the business
  rules allow offering P), `value__P__S__M` and `bayes_value__P__S__M` (the
  expected value of that offer in that context: P(convert) times the expected
  price of the plan bought, true and knowing only the observed features),
  and `value__none`, `bayes_value__none` (no offer: organic purchases, 0 in
  a world without them). Truth of a world with organic purchases also has
  `p_convert__none`, `bayes_p_convert__none` (P(any purchase | no offer)),
  `logging_value` (the logging policy's true expected revenue for the user,
  its holdout mixed in) and `logging_contact` (the probability that it
  contacts the user: 1 - its holdout share); the logging metrics need the
  last two.

File `--test-file` (default the last; the driver holds out the first, the
one that is always full) is held out; every other file trains the baselines
(and, in the driver, upsell). Rows are independent users of one world, so any
split of files is a fair one; different seeds are different worlds.

# Policies

Each policy picks one (product, context) per held-out user, or no offer:

- `upsell`: the decisions file of `upsell recommend` (one per training seed;
  a null `offer` is no offer).
- `logreg`: logistic regression on one-hot categoricals, standardised
  numerics with missing flags, offer x context one-hot and offer x feature
  interactions; a multinomial regression on converters for the plan. Run once
  (it is deterministic).
- `lightgbm`: a binary LightGBM conversion model on every feature plus offer
  and context (categoricals as categorical), and a multiclass LightGBM plan
  model on converters; once per seed in `--seeds` (split, bagging).

`logreg` and `lightgbm` learn from the treated rows (the logged offers)
alone; in a world whose training files hold no-offer rows, `lightgbm` is
named `lgbm_propensity` (the policy that ignores organic purchases), and two
LightGBM baselines that model the no-offer arm join it, once per seed:

- `lgbm_s_learner`: `lightgbm` trained on every row, no offer being one more
  level of the offer column (and of each context column).
- `lgbm_t_learner`: a conversion and a plan model per arm, each product's
  trained on its rows (the context columns as features of conversion) and
  the no-offer arm's on the holdout rows.

A baseline offers the argmax over eligible (product, context) of
P(convert | x, product, context) * sum_k P(plan k | convert, x, product) *
price_k - contact cost, against "no offer": worth the same expression for
the no-offer arm for the S- and T-learners, 0 for the others (so chosen only
when the contact cost outweighs every offer).

# Metrics (`decision_metrics`, the same for every policy)

- value: the mean over users of the true `value__P__S__M` of the chosen offer
  minus the contact cost, or `value__none` for no offer. An offer the rules
  forbid (`eligible__P` = 0) is not made: it scores as no offer, and its
  share is reported as `ineligible_share`.
- oracle: the mean of the best true value among the eligible offers and no
  offer.
- random: the mean of the mean true value of the eligible offers (a policy
  that always offers, uniformly at random).
- bayes: the value of the argmax of `bayes_value__P__S__M` among the eligible
  offers and `bayes_value__none`: the best decisions a model of the observed
  features can make.
- share_of_lift = (value - random) / (oracle - random); bayes_share is the
  Bayes policy's; share_of_bayes = (value - random) / (bayes - random).
- untreated_share: the share of users given no offer (none chosen, or an
  ineligible one not made); oracle_untreated_share and bayes_untreated_share
  are the oracle's and the Bayes policy's.
- logging_value: the mean of `logging_value` - contact cost *
  `logging_contact`; logging_share = (value - logging_value) / (oracle -
  logging_value), the share of the gain over the logging policy that the
  oracle makes; bayes_logging_share is the Bayes policy's. Only with truth
  that has the logging columns.

Prediction metrics on the treated rows of the held-out file (the model's
P(convert) for the logged offer and context, and P(plan | convert, logged
offer); for upsell its `upsell score` file's `p_convert` and `p_plan__P`):
conversion AUC, ECE (15 equal-width bins, weighted by bin size), conversion
log loss and plan log loss on converters. The `bayes` row shows them for
`bayes_p_convert__<offer>` (its AUC is the best achievable), the `oracle` row
for the true `p_convert__<offer>` and `p_plan__P`. The `logging` row is the
logging policy (its value and untreated share).

The output: one JSON record per (policy, seed) in `--out`, and a Markdown
table of the mean and sd over seeds on stdout.
"""
import argparse
import json
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

ECE_BINS = 15
EPS = 1e-7
# Categories (mostly regions) seen fewer times in training share one
# infrequent column in the logistic regressions.
RARE_MIN_COUNT = 20
VALID_FRACTION = 0.1
# The LightGBM conversion model's tuning. With LightGBM's default categorical
# handling the regions (about 5,000 values) overfit: on 200,000 rows of world
# 21 these settings lift its share of the achievable lift from 0.83 to 0.91
# (and from 0.44 to 0.67 on 20,000 rows). The plan model, fitted on the few
# converters, keeps the defaults, which let it split on the offer.
CONVERSION_PARAMS = {
    "num_leaves": 63,
    "min_data_in_leaf": 200,
    "lambda_l2": 1.0,
    "cat_smooth": 50,
    "cat_l2": 10,
    "min_data_per_group": 200,
    "max_cat_threshold": 16,
}


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The world.


@dataclass
class World:
    """The columns' roles, the candidates, and the train and held-out rows."""

    numeric: list[str]
    categorical: list[str]  # categorical and hashed columns alike
    log1p: list[str]
    offer: str
    no_offer: str | None  # the holdout arm's offer; None without such training rows
    context: list[str]  # the context columns, in config order
    converted: str
    plan: str
    products: list[str]
    prices: np.ndarray  # [P]
    contexts: list[tuple[str, ...]]  # every context combination, C of them
    train: pd.DataFrame
    test: pd.DataFrame

    def context_values(self, column: int) -> list[str]:
        return sorted({c[column] for c in self.contexts})

    def offer_index(self, offers: pd.Series) -> np.ndarray:
        """Product indices of offer names; -1 for null (no offer)."""
        index = {p: i for i, p in enumerate(self.products)}
        return np.array([index.get(o, -1) if isinstance(o, str) else -1 for o in offers])

    def treated(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows logged an offer of a product (not the holdout arm)."""
        return self.offer_index(frame[self.offer]) >= 0

    def context_index(self, frame: pd.DataFrame) -> np.ndarray:
        """Context combination indices of each row's context columns; -1 where
        a value is null."""
        index = {c: j for j, c in enumerate(self.contexts)}
        keys = zip(*(frame[c] for c in self.context))
        return np.array([index.get(tuple(k), -1) for k in keys])


def read_parts(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def truth_contexts(columns, products: list[str], width: int) -> list[tuple[str, ...]]:
    """The context combinations of the `value__<product>__<c1>__...` columns,
    checked to form the full product x context grid."""
    contexts = sorted(
        {
            tuple(parts[2:])
            for parts in (c.split("__") for c in columns)
            if parts[0] == "value" and parts[1] in products and len(parts) == 2 + width
        }
    )
    missing = [
        f"value__{p}__{'__'.join(c)}"
        for p in products
        for c in contexts
        if f"value__{p}__{'__'.join(c)}" not in columns
    ]
    if not contexts or missing:
        sys.exit(f"error: the truth lacks per-context values (e.g. {missing[:1] or 'value__<product>__<context>'})")
    return contexts


def holdout_arm(columns: dict, train: pd.DataFrame) -> str | None:
    """The no-offer arm's offer value (`columns.no_offer`) when training rows
    hold it."""
    name = columns.get("no_offer")
    return name if name is not None and (train[columns["offer"]] == name).any() else None


def load_world(path: Path, test_file: int) -> tuple[World, pd.DataFrame]:
    """The world and the held-out file's truth."""
    config = tomllib.loads((path / "config.toml").read_text())
    columns = config["columns"]
    exposures = sorted((path / "exposures").glob("part-*.parquet"))
    truths = sorted((path / "truth").glob("part-*.parquet"))
    if len(exposures) < 2 or len(truths) != len(exposures):
        sys.exit(f"error: {path} needs at least 2 exposure files and as many truth files")
    test_file = test_file % len(exposures)
    truth = pd.read_parquet(truths[test_file])
    products = list(config["products"])
    train = read_parts([p for i, p in enumerate(exposures) if i != test_file])
    world = World(
        numeric=list(columns.get("numeric", [])),
        categorical=list(columns.get("categorical", [])) + list(columns.get("hashed", {})),
        log1p=list(config.get("preprocess", {}).get("log1p", [])),
        offer=columns["offer"],
        no_offer=holdout_arm(columns, train),
        context=list(columns.get("context", [])),
        converted=columns["converted"],
        plan=columns["plan"],
        products=products,
        prices=np.array([config["products"][p] for p in products], dtype=float),
        contexts=truth_contexts(set(truth.columns), products, len(columns.get("context", []))),
        train=train,
        test=pd.read_parquet(exposures[test_file]),
    )
    id_column = columns.get("id", "user_id")
    if not world.test[id_column].equals(truth["user_id"]):
        sys.exit(f"error: {truths[test_file]} does not hold the rows of {exposures[test_file]} in order")
    log(f"world {path}: {len(world.train)} training rows, {len(world.test)} held out "
        f"({exposures[test_file].name}), {len(products)} products x {len(world.contexts)} contexts"
        + (f", holdout arm {world.no_offer!r}" if world.no_offer else ""))
    return world, truth


@dataclass
class Truth:
    """The held-out rows' truth as arrays: n users, P products, C contexts."""

    products: list[str]
    value: np.ndarray  # [n, P, C]
    bayes_value: np.ndarray  # [n, P, C]
    value_none: np.ndarray  # [n]
    bayes_none: np.ndarray  # [n]
    eligible: np.ndarray  # [n, P] bool
    # The m treated rows (world.treated):
    p_convert: np.ndarray  # [m] true P(convert), logged offer and context
    bayes_p_convert: np.ndarray  # [m] the same knowing only observed features
    p_plan: np.ndarray  # [m, P] true P(plan | convert, logged offer)
    # The logging policy (None when the truth lacks it):
    logging_value: np.ndarray | None  # [n] its true expected revenue
    logging_contact: np.ndarray | None  # [n] its probability of an offer


def truth_arrays(world: World, truth: pd.DataFrame) -> Truth:
    def grid(prefix):
        return np.stack(
            [
                np.stack([truth[f"{prefix}__{p}__{'__'.join(c)}"].to_numpy(float) for c in world.contexts], axis=1)
                for p in world.products
            ],
            axis=1,
        )

    def per_product(prefix):
        return np.stack([truth[f"{prefix}__{p}"].to_numpy(float) for p in world.products], axis=1)

    rows = np.flatnonzero(world.treated(world.test))
    logged = world.offer_index(world.test[world.offer])[rows]
    logging = {"logging_value", "logging_contact"} <= set(truth.columns)
    return Truth(
        products=world.products,
        value=grid("value"),
        bayes_value=grid("bayes_value"),
        value_none=truth["value__none"].to_numpy(float),
        bayes_none=truth["bayes_value__none"].to_numpy(float),
        eligible=per_product("eligible") > 0.5,
        p_convert=per_product("p_convert")[rows, logged],
        bayes_p_convert=per_product("bayes_p_convert")[rows, logged],
        p_plan=per_product("p_plan")[rows],
        logging_value=truth["logging_value"].to_numpy(float) if logging else None,
        logging_contact=truth["logging_contact"].to_numpy(float) if logging else None,
    )


# ---------------------------------------------------------------------------
# Decisions and their metrics.


def greedy_choice(expected: np.ndarray, eligible: np.ndarray, none: np.ndarray):
    """The eligible (product, context) of highest expected value per row, as
    (product, context) index arrays; -1 for no offer, chosen when `none` (the
    value of no offer) beats every offer, or when no offer is eligible. Ties
    between offers go to the first (products outer, contexts inner); a tie
    with no offer goes to the offer."""
    n, _, contexts = expected.shape
    masked = np.where(eligible[:, :, None], expected, -np.inf).reshape(n, -1)
    best = masked.argmax(axis=1)
    best_value = masked[np.arange(n), best]
    product, context = np.divmod(best, contexts)
    skip = ~np.isfinite(best_value) | (none > best_value)
    product[skip] = -1
    context[skip] = -1
    return product, context


@dataclass
class Reference:
    """The values per user that every policy is measured between, and the
    oracle's and the Bayes policy's untreated shares."""

    oracle: float
    random: float
    bayes: float
    oracle_untreated: float
    bayes_untreated: float
    logging: float | None  # None when the truth lacks the logging policy


def offer_values(truth: Truth, cost: float) -> np.ndarray:
    """[n, P, C]: the true value of every offer, contact cost deducted."""
    return truth.value - cost


def policy_value(product: np.ndarray, context: np.ndarray, truth: Truth, cost: float) -> dict:
    """The true value per user of these choices (an ineligible offer is not
    made: it counts as no offer), with the shares of no offer chosen, of
    ineligible offers and of users left untreated (both), and the offer mix."""
    rows = np.arange(len(product))
    offered = product >= 0
    safe_product, safe_context = np.maximum(product, 0), np.maximum(context, 0)
    allowed = offered & truth.eligible[rows, safe_product]
    value = np.where(allowed, offer_values(truth, cost)[rows, safe_product, safe_context], truth.value_none)
    return {
        "value": float(value.mean()),
        "no_offer_share": float((~offered).mean()),
        "ineligible_share": float((offered & ~allowed).mean()),
        "untreated_share": float((~allowed).mean()),
        "offer_mix": {p: float((product == k).mean()) for k, p in enumerate(truth.products)},
    }


def reference_choices(truth: Truth, cost: float) -> dict:
    """The oracle's choices (greedy on the true values) and the Bayes
    policy's (greedy on the values knowing only the observed features)."""
    return {
        "oracle": greedy_choice(offer_values(truth, cost), truth.eligible, truth.value_none),
        "bayes": greedy_choice(truth.bayes_value - cost, truth.eligible, truth.bayes_none),
    }


def reference_values(truth: Truth, cost: float, choices: dict) -> Reference:
    values = offer_values(truth, cost)
    n = len(values)
    eligible = np.broadcast_to(truth.eligible[:, :, None], values.shape).reshape(n, -1)
    mean_offer = np.where(eligible, values.reshape(n, -1), 0.0).sum(axis=1) / np.maximum(eligible.sum(axis=1), 1)
    random = np.where(eligible.any(axis=1), mean_offer, truth.value_none)
    oracle = policy_value(*choices["oracle"], truth, cost)
    bayes = policy_value(*choices["bayes"], truth, cost)
    return Reference(
        oracle=oracle["value"],
        random=float(random.mean()),
        bayes=bayes["value"],
        oracle_untreated=oracle["untreated_share"],
        bayes_untreated=bayes["untreated_share"],
        logging=logging_value(truth, cost),
    )


def logging_value(truth: Truth, cost: float) -> float | None:
    """The logging policy's value per user, the contact cost deducted as often
    as it contacts; None when the truth lacks it."""
    if truth.logging_value is None:
        return None
    return float((truth.logging_value - cost * truth.logging_contact).mean())


def share(value: float, low: float, high: float) -> float:
    """Where value lies from low (0) to high (1)."""
    return (value - low) / (high - low)


def decision_metrics(product, context, truth: Truth, reference: Reference, cost: float) -> dict:
    """Every decision metric of one policy's choices (the module docstring
    defines them)."""
    metrics = policy_value(product, context, truth, cost)
    value = metrics["value"]
    metrics.update(
        oracle_value=reference.oracle,
        random_value=reference.random,
        bayes_value=reference.bayes,
        share_of_lift=share(value, reference.random, reference.oracle),
        bayes_share=share(reference.bayes, reference.random, reference.oracle),
        share_of_bayes=share(value, reference.random, reference.bayes),
        oracle_untreated_share=reference.oracle_untreated,
        bayes_untreated_share=reference.bayes_untreated,
    )
    if reference.logging is not None:
        metrics.update(
            logging_value=reference.logging,
            logging_share=share(value, reference.logging, reference.oracle),
            bayes_logging_share=share(reference.bayes, reference.logging, reference.oracle),
        )
    return metrics


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Equal-width bins over [0, 1], each weighted by its share of rows."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=y, minlength=bins) - np.bincount(which, weights=p, minlength=bins))
    return float(gap.sum() / count.sum())


def prediction_metrics(world: World, p_convert: np.ndarray, p_plan: np.ndarray | None) -> dict:
    """Conversion AUC, ECE and log loss of P(convert) [m] on the held-out
    treated rows, and the plan log loss of P(plan | convert, logged offer)
    [m, P] on their converters."""
    treated = world.treated(world.test)
    y = world.test[world.converted].to_numpy(float)[treated]
    p = np.clip(p_convert, EPS, 1 - EPS)
    metrics = {
        "auc": float(roc_auc_score(y, p)),
        "ece": expected_calibration_error(y, p),
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "plan_log_loss": None,
    }
    if p_plan is not None:
        bought = world.offer_index(world.test[world.plan])[treated]
        converters = bought >= 0
        chosen = p_plan[converters, bought[converters]]
        metrics["plan_log_loss"] = float(-np.mean(np.log(np.clip(chosen, EPS, 1.0))))
    return metrics


# ---------------------------------------------------------------------------
# Baselines. Each has `fit(frame)`, `prepare(frame)` (the model's view of a
# frame's user features), `p_convert(prepared, offer, context)` and
# `p_plan(prepared, offer)` with per-row product and context indices, and
# `no_offer`: None for a model of the logged offers alone (fitted on the
# treated rows), else the holdout arm's offer value (fitted on every row;
# product and context index -1 is then the no-offer arm).


def numeric_frame(world: World, frame: pd.DataFrame) -> pd.DataFrame:
    numeric = frame[world.numeric].astype(float)
    for column in world.log1p:
        if column in numeric:
            numeric[column] = np.log1p(numeric[column].clip(lower=0))
    return numeric


def one_hot(index: np.ndarray, width: int) -> sp.csr_matrix:
    rows = np.arange(len(index))
    return sp.csr_matrix((np.ones(len(index)), (rows, index)), shape=(len(index), width))


class LogReg:
    name = "logreg"
    no_offer = None

    def __init__(self, world: World):
        self.world = world

    def fit(self, frame: pd.DataFrame):
        w = self.world
        numeric = numeric_frame(w, frame)
        self.mean = numeric.mean()
        self.std = numeric.fillna(self.mean).std().replace(0, 1)
        self.flagged = [c for c in w.numeric if numeric[c].isna().any()]
        self.encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=RARE_MIN_COUNT, dtype=float
        ).fit(frame[w.categorical].astype(str))
        base = self.prepare(frame)
        offer = w.offer_index(frame[w.offer])
        self.convert = LogisticRegression(max_iter=3000).fit(
            self.design(base, offer, w.context_index(frame)), frame[w.converted]
        )
        converters = frame[w.converted].to_numpy() == 1
        self.plan = LogisticRegression(max_iter=3000).fit(
            self.design(base[converters], offer[converters], None),
            w.offer_index(frame.loc[converters, w.plan]),
        )
        return self

    def prepare(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """Standardised numerics, missing flags and one-hot categoricals."""
        numeric = numeric_frame(self.world, frame)
        scaled = ((numeric.fillna(self.mean) - self.mean) / self.std).to_numpy()
        flags = numeric[self.flagged].isna().to_numpy(float)
        categorical = self.encoder.transform(frame[self.world.categorical].astype(str))
        return sp.hstack([sp.csr_matrix(scaled), sp.csr_matrix(flags), categorical], format="csr")

    def design(self, base, offer: np.ndarray, context: np.ndarray | None) -> sp.csr_matrix:
        """The user features, the offer one-hot, offer x feature interactions
        and (for conversion) the offer x context one-hot."""
        products, contexts = len(self.world.products), len(self.world.contexts)
        blocks = [base, one_hot(offer, products)]
        blocks += [sp.diags((offer == k).astype(float)) @ base for k in range(products)]
        if context is not None:
            blocks.append(one_hot(offer * contexts + context, products * contexts))
        return sp.hstack(blocks, format="csr")

    def p_convert(self, base, offer, context) -> np.ndarray:
        return self.convert.predict_proba(self.design(base, offer, context))[:, 1]

    def p_plan(self, base, offer) -> np.ndarray:
        return plan_columns(self.plan.predict_proba(self.design(base, offer, None)), self.plan.classes_, self.world)


def plan_columns(probabilities: np.ndarray, classes, world: World) -> np.ndarray:
    """[n, P] from a classifier's columns (a product never bought in training
    has no column: probability 0)."""
    out = np.zeros((len(probabilities), len(world.products)))
    out[:, np.asarray(classes, dtype=int)] = probabilities
    return out


class LightGBM:
    """One conversion and one plan model over every arm, the offer and the
    context being features: `lightgbm` (or `lgbm_propensity`) on the logged
    offers, `lgbm_s_learner` with a no-offer level."""

    def __init__(self, world: World, seed: int, name: str = "lightgbm", no_offer: str | None = None):
        self.world = world
        self.seed = seed
        self.name = name
        self.no_offer = no_offer

    def params(self, **extra) -> dict:
        return {
            "learning_rate": 0.05,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": self.seed,
            "verbosity": -1,
            **extra,
        }

    def fit(self, frame: pd.DataFrame):
        w = self.world
        base = self.fit_prepare(frame)
        offer = w.offer_index(frame[w.offer])
        self.convert, self.plan = self.fit_models(
            self.design(base, offer, w.context_index(frame)), self.design(base, offer, None), frame, ""
        )
        return self

    def fit_models(self, x_convert: pd.DataFrame, x_plan: pd.DataFrame, frame: pd.DataFrame, label: str):
        """The conversion model on x_convert and the plan model on the
        converters' x_plan, the outcomes from frame's rows (in order); label
        prefixes their log lines."""
        w = self.world
        y = frame[w.converted].to_numpy()
        converters = y == 1
        convert = self.train(x_convert, y, self.params(objective="binary", **CONVERSION_PARAMS), 1000, label)
        plan = self.train(
            x_plan[converters],
            w.offer_index(frame.loc[converters, w.plan]),
            self.params(objective="multiclass", num_class=len(w.products), num_leaves=31, min_data_in_leaf=50),
            500,
            label,
        )
        return convert, plan

    def train(self, x: pd.DataFrame, y: np.ndarray, params: dict, rounds: int, label: str) -> lgb.Booster:
        """Early stopping on a seeded VALID_FRACTION of the rows."""
        valid = np.random.default_rng(self.seed).random(len(x)) < VALID_FRACTION
        booster = lgb.train(
            params,
            lgb.Dataset(x[~valid], y[~valid]),
            num_boost_round=rounds,
            valid_sets=[lgb.Dataset(x[valid], y[valid])],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        log(f"  {self.name} {label}{params['objective']}: {booster.best_iteration} rounds")
        return booster

    def fit_prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`prepare` with the categories of these (the training) rows."""
        self.categories = {c: sorted(frame[c].dropna().astype(str).unique()) for c in self.world.categorical}
        return self.prepare(frame)

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Raw numerics (trees need no scaling) and categoricals with the
        training categories (unseen values become missing)."""
        out = frame[self.world.numeric].astype(float)
        for column, categories in self.categories.items():
            values = frame[column].astype(str)
            out[column] = pd.Categorical(values.where(values.isin(categories)), categories=categories)
        return out.reset_index(drop=True)

    def design(self, base: pd.DataFrame, offer: np.ndarray, context: np.ndarray | None) -> pd.DataFrame:
        w = self.world
        x = base.reset_index(drop=True).assign(**{w.offer: self.levels(offer, w.products)})
        return x if context is None else self.with_context(x, context)

    def with_context(self, x: pd.DataFrame, context: np.ndarray) -> pd.DataFrame:
        """x with the context columns of these context indices."""
        w = self.world
        for i, column in enumerate(w.context):
            values = w.context_values(i)
            codes = np.array([values.index(c[i]) for c in w.contexts])
            x[column] = self.levels(np.where(context >= 0, codes[context], -1), values)
        return x

    def levels(self, codes: np.ndarray, names: list[str]) -> pd.Categorical:
        """A categorical of indices into names; -1 is the no-offer level when
        the model has one (else missing)."""
        if self.no_offer is None:
            return pd.Categorical.from_codes(codes, names)
        return pd.Categorical.from_codes(np.where(codes < 0, len(names), codes), [*names, self.no_offer])

    def p_convert(self, base, offer, context) -> np.ndarray:
        return predict(self.convert, self.design(base, offer, context))

    def p_plan(self, base, offer) -> np.ndarray:
        return predict(self.plan, self.design(base, offer, None))


class TLearner(LightGBM):
    """`lgbm_t_learner`: a conversion and a plan model per arm (each product
    and no offer) on its own rows; the context columns are features of a
    product's conversion."""

    def __init__(self, world: World, seed: int):
        super().__init__(world, seed, "lgbm_t_learner", world.no_offer)

    def fit(self, frame: pd.DataFrame):
        w = self.world
        base = self.fit_prepare(frame)
        offer, context = w.offer_index(frame[w.offer]), w.context_index(frame)
        self.arms = {}
        for arm, name in [*enumerate(w.products), (-1, self.no_offer)]:
            rows = offer == arm
            x_convert = self.arm_design(base[rows], context[rows], arm)
            self.arms[arm] = self.fit_models(x_convert, base[rows].reset_index(drop=True), frame[rows], f"{name} ")
        return self

    def arm_design(self, base: pd.DataFrame, context: np.ndarray, arm: int) -> pd.DataFrame:
        """The conversion model's view of an arm's rows."""
        x = base.reset_index(drop=True)
        return x if arm < 0 else self.with_context(x, context)

    def p_convert(self, base, offer, context) -> np.ndarray:
        out = np.empty(len(offer))
        for arm in np.unique(offer):
            rows = offer == arm
            out[rows] = predict(self.arms[arm][0], self.arm_design(base[rows], context[rows], arm))
        return out

    def p_plan(self, base, offer) -> np.ndarray:
        out = np.empty((len(offer), len(self.world.products)))
        for arm in np.unique(offer):
            rows = offer == arm
            out[rows] = predict(self.arms[arm][1], base[rows].reset_index(drop=True))
        return out


def predict(booster: lgb.Booster, x: pd.DataFrame) -> np.ndarray:
    return booster.predict(x, num_iteration=booster.best_iteration)


def lightgbm_baselines(world: World, seed: int) -> list:
    """The LightGBM baselines of one seed: `lightgbm`, or in a world with a
    holdout arm `lgbm_propensity` and the S- and T-learners."""
    if world.no_offer is None:
        return [LightGBM(world, seed)]
    return [
        LightGBM(world, seed, "lgbm_propensity"),
        LightGBM(world, seed, "lgbm_s_learner", world.no_offer),
        TLearner(world, seed),
    ]


def baseline_predictions(model, world: World):
    """The model's expected value of every (product, context) [n, P, C] and of
    no offer [n] (0 for a model of the logged offers alone) for every
    held-out user, and its predictions for the logged offers of the treated
    rows: P(convert) [m] and P(plan | convert, offer) [m, P]."""
    base = model.prepare(world.test)
    n, products, contexts = len(world.test), len(world.products), len(world.contexts)
    expected = np.empty((n, products, contexts))
    for k in range(products):
        offer = np.full(n, k)
        value_if_converted = model.p_plan(base, offer) @ world.prices
        for j in range(contexts):
            expected[:, k, j] = model.p_convert(base, offer, np.full(n, j)) * value_if_converted
    none = np.zeros(n)
    if model.no_offer is not None:
        arm = np.full(n, -1)
        none = model.p_convert(base, arm, arm) * (model.p_plan(base, arm) @ world.prices)
    treated = world.treated(world.test)
    logged = world.offer_index(world.test[world.offer])[treated]
    context = world.context_index(world.test)[treated]
    return expected, none, model.p_convert(base[treated], logged, context), model.p_plan(base[treated], logged)


# ---------------------------------------------------------------------------
# Policies.


def record(policy: str, seed, decisions: dict, predictions: dict, **extra) -> dict:
    return {"policy": policy, "seed": seed, **decisions, **predictions, **extra}


def run_baseline(model, world: World, truth: Truth, references: dict, seed) -> list[dict]:
    """Fits `model` once and decides at every contact cost of `references`."""
    started = time.perf_counter()
    model.fit(world.train if model.no_offer is not None else world.train[world.treated(world.train)])
    fitted = time.perf_counter()
    expected, none, p_convert, p_plan = baseline_predictions(model, world)
    predictions = prediction_metrics(world, p_convert, p_plan)
    decided = time.perf_counter()
    log(f"{model.name} seed {seed}: fit {fitted - started:.0f} s, predict {decided - fitted:.0f} s")
    return [
        record(
            model.name,
            seed,
            decision_metrics(*greedy_choice(expected - cost, truth.eligible, none), truth, reference, cost),
            predictions,
            contact_cost=cost,
            fit_seconds=fitted - started,
            decide_seconds=decided - fitted,
        )
        for cost, (_, reference) in references.items()
    ]


def run_upsell(name: str, seed, decisions_path: Path, scores_path: Path, world, truth, reference, cost) -> dict:
    decisions = pd.read_parquet(decisions_path)
    scores = pd.read_parquet(scores_path)
    for frame, path in [(decisions, decisions_path), (scores, scores_path)]:
        if len(frame) != len(world.test):
            sys.exit(f"error: {path} has {len(frame)} rows, the held-out file {len(world.test)}")
    product = world.offer_index(decisions[world.offer])
    context = np.where(product >= 0, world.context_index(decisions), -1)
    if ((product >= 0) & (context < 0)).any():
        sys.exit(f"error: {decisions_path} has offers in contexts outside the truth's")
    treated = world.treated(world.test)
    p_plan = scores[[f"p_plan__{p}" for p in world.products]].to_numpy(float)[treated]
    return record(
        name,
        seed,
        decision_metrics(product, context, truth, reference, cost),
        prediction_metrics(world, scores["p_convert"].to_numpy(float)[treated], p_plan),
        contact_cost=cost,
    )


def reference_records(world: World, truth: Truth, reference: Reference, choices: dict, cost: float) -> list[dict]:
    """The Bayes policy (with the Bayes P(convert)), the oracle (with the true
    probabilities), the random policy and, when the truth has it, the logging
    policy."""
    records = [
        record("bayes", None, decision_metrics(*choices["bayes"], truth, reference, cost),
               prediction_metrics(world, truth.bayes_p_convert, None)),
        record("oracle", None, decision_metrics(*choices["oracle"], truth, reference, cost),
               prediction_metrics(world, truth.p_convert, truth.p_plan)),
        record("random", None, {"value": reference.random, "share_of_lift": 0.0, "share_of_bayes": 0.0}, {}),
    ]
    if reference.logging is not None:
        records.append(record("logging", None, logging_metrics(truth, reference), {}))
    return records


def logging_metrics(truth: Truth, reference: Reference) -> dict:
    """The logging policy's value, shares and untreated share."""
    return {
        "value": reference.logging,
        "share_of_lift": share(reference.logging, reference.random, reference.oracle),
        "share_of_bayes": share(reference.logging, reference.random, reference.bayes),
        "logging_share": 0.0,
        "untreated_share": float(1 - truth.logging_contact.mean()),
    }


# ---------------------------------------------------------------------------
# The table.

COLUMNS = [
    ("value", "value / user", 3),
    ("share_of_lift", "share of lift", 3),
    ("share_of_bayes", "share of Bayes", 3),
    ("logging_share", "share over logging", 3),
    ("auc", "AUC", 4),
    ("ece", "ECE", 4),
    ("log_loss", "log loss", 4),
    ("plan_log_loss", "plan log loss", 4),
    ("no_offer_share", "no offer", 3),
    ("ineligible_share", "ineligible", 3),
    ("untreated_share", "untreated", 3),
]


def cell(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    mean = f"{np.mean(values):.{digits}f}"
    return f"{mean} ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else mean


def markdown(records: list[dict]) -> str:
    """The COLUMNS that some record has, one row per policy."""
    policies = list(dict.fromkeys(r["policy"] for r in records))
    columns = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in records)]
    lines = [
        "| policy | runs | " + " | ".join(title for _, title, _ in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for policy in policies:
        rows = [r for r in records if r["policy"] == policy]
        cells = [cell([r.get(key) for r in rows], digits) for key, _, digits in columns]
        lines.append(f"| {policy} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, required=True, help="an `upsell synth` output directory")
    parser.add_argument("--test-file", type=int, default=-1, help="index of the held-out file (default the last)")
    parser.add_argument(
        "--upsell", type=Path, nargs="+", default=[],
        help="`upsell recommend` outputs, one per training seed (and per contact cost, cost-major)",
    )
    parser.add_argument("--upsell-scores", type=Path, nargs="+", default=[], help="`upsell score` outputs, in the same order")
    parser.add_argument("--upsell-seeds", type=int, nargs="+", help="the training seed of each (default 1, 2, ...)")
    parser.add_argument("--upsell-name", default="upsell", help="the policy name of the upsell rows")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="LightGBM seeds (default 1)")
    parser.add_argument(
        "--contact-cost", type=float, nargs="+", default=[0.0],
        help="value deducted per offer made (default 0); several: the baselines are fitted once and decide at each",
    )
    parser.add_argument("--out", type=Path, help="write the records here as JSON")
    args = parser.parse_args()
    costs = args.contact_cost
    upsell_seeds = args.upsell_seeds or list(range(1, len(args.upsell_scores) + 1))
    if not len(args.upsell) == len(costs) * len(upsell_seeds) or len(args.upsell_scores) != len(upsell_seeds):
        parser.error(
            "--upsell needs one entry per training seed and contact cost, --upsell-scores and "
            "--upsell-seeds one per training seed"
        )

    world, truth_frame = load_world(args.world, args.test_file)
    truth = truth_arrays(world, truth_frame)
    references = {}
    for cost in costs:
        choices = reference_choices(truth, cost)
        references[cost] = (choices, reference_values(truth, cost, choices))
    records = []
    for c, (cost, (_, reference)) in enumerate(references.items()):
        decisions = args.upsell[c * len(upsell_seeds):(c + 1) * len(upsell_seeds)]
        records += [
            run_upsell(args.upsell_name, seed, path, scores, world, truth, reference, cost)
            for seed, path, scores in zip(upsell_seeds, decisions, args.upsell_scores)
        ]
    records += run_baseline(LogReg(world), world, truth, references, None)
    for seed in args.seeds:
        for model in lightgbm_baselines(world, seed):
            records += run_baseline(model, world, truth, references, seed)
    for cost, (choices, reference) in references.items():
        records += [dict(r, contact_cost=cost) for r in reference_records(world, truth, reference, choices, cost)]
    if args.out:
        args.out.write_text(json.dumps(records, indent=2) + "\n")
    for cost, (_, reference) in references.items():
        if len(costs) > 1:
            print(f"Contact cost {cost:g}:\n")
        print(markdown([r for r in records if r["contact_cost"] == cost]))
        print()
        logging = f", logging policy {reference.logging:.3f}" if reference.logging is not None else ""
        print(
            f"Value per user: oracle {reference.oracle:.3f}, Bayes policy {reference.bayes:.3f}, "
            f"random eligible offer {reference.random:.3f}{logging}; contact cost {cost:g}. "
            f"Held out: {len(world.test)} users; trained on {len(world.train)} rows."
        )
        print()


if __name__ == "__main__":
    main()
