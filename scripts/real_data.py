"""upsell against logistic regression and LightGBM on four small public data
sets, each on the same seeded splits (run by scripts/real-data.sh, which
sets up the Python environment).

- `mlc_churn` (telecom customers, modeldata R package) and `caravan`
  (insurance purchase, CoIL 2000, ISLR R package): binary, held-out AUC of
  the conversion head.
- `catsup` and `cracker` (brand-choice panels, Ecdat R package): which brand
  a household buys, with each brand's display, feature and price at the
  purchase, and the household id as a categorical; held-out accuracy of the
  plan head (every row is a purchase: `converted` is 1).

Per seed, the rows are split 80/20 at random; upsell trains on the 80 with
its default config (only the columns are given: its own validation split
comes out of the 80) and is scored on the 20 with `upsell eval`. The
baselines see the same 80 and 20:

- logistic regression: standardised numerics and one-hot categoricals, the
  L2 strength picked by 5-fold cross-validation (LogisticRegressionCV);
- LightGBM: categoricals as categorical, early stopping on a seeded tenth
  of the 80, leaves and minimum leaf size picked on that tenth.

    python scripts/real_data.py UPSELL_BIN SEEDS OUT_JSON

UPSELL_SET (space-separated key=value) adds `--set` overrides to upsell's
training, for ablations; the published table uses the defaults.
UPSELL_BASELINES=0 skips logistic regression and LightGBM (upsell alone, for
ablations); UPSELL_DATASETS (space-separated names) runs only those sets.
"""

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

REPO = Path(__file__).resolve().parent.parent


def binary(name: str, config: str, label: str, positive: str):
    """A binary set whose columns come from a shipped config."""
    parsed = tomllib.loads((REPO / "configs" / config).read_text())
    columns = parsed["columns"]
    return {
        "name": name,
        "task": "binary",
        "path": REPO / "tests" / "data" / f"{name}.csv",
        "numeric": columns.get("numeric", []),
        "categorical": columns.get("categorical", []) + list(columns.get("hashed", {})),
        "columns": columns,
        "preprocess": parsed.get("preprocess", {}),
        "label": label,
        "positive": positive,
    }


def choice(name: str, brands: list[str]):
    """A brand-choice panel: display, feature and price of each brand."""
    numeric = [f"{kind}_{b}" for kind in ("disp", "feat", "price") for b in brands]
    return {
        "name": name,
        "task": "choice",
        "path": REPO / "tests" / "data" / f"{name}.csv",
        "numeric": numeric,
        "categorical": ["id"],
        "columns": {"numeric": numeric, "categorical": ["id"], "converted": "converted", "plan": "choice"},
        "preprocess": {},
        "label": "choice",
        "brands": brands,
    }


DATASETS = [
    binary("mlc_churn", "mlc_churn.toml", "churn", "yes"),
    binary("caravan", "caravan.toml", "Purchase", "Yes"),
    choice("catsup", ["heinz41", "heinz32", "heinz28", "hunts32"]),
    choice("cracker", ["sunshine", "kleebler", "nabisco", "private"]),
]


def toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def upsell_config(ds: dict, seed: int) -> str:
    """The data set's columns and nothing else: upsell's defaults decide."""
    lines = [f"seed = {seed}", "", "[columns]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in ds["columns"].items()]
    if ds["preprocess"].get("log1p"):
        lines += ["", "[preprocess]", f"log1p = {toml_value(ds['preprocess']['log1p'])}"]
    if ds["task"] == "choice":
        lines += ["", "[products]"] + [f"{b} = 1.0" for b in ds["brands"]]
    return "\n".join(lines) + "\n"


def run_upsell(upsell: str, ds: dict, train: pd.DataFrame, test: pd.DataFrame, seed: int, work: Path) -> float:
    train.to_csv(work / "train.csv", index=False)
    test.to_csv(work / "test.csv", index=False)
    (work / "config.toml").write_text(upsell_config(ds, seed))
    run = work / "run"
    # UPSELL_SET: space-separated key=value overrides, for ablations.
    overrides = [a for kv in os.environ.get("UPSELL_SET", "").split() for a in ("--set", kv)]
    subprocess.run(
        [upsell, "train", "--config", str(work / "config.toml"), "--data", str(work / "train.csv"),
         "--out", str(run), "--set", "train.threads=2", *overrides],
        check=True, stdout=subprocess.DEVNULL,
    )
    out = subprocess.run(
        [upsell, "eval", "--checkpoint", str(run / "checkpoint"), "--data", str(work / "test.csv")],
        check=True, capture_output=True, text=True,
    )
    report = json.loads(out.stdout)
    return report["conversion"]["auc"] if ds["task"] == "binary" else report["plan"]["accuracy"]


def target(ds: dict, frame: pd.DataFrame) -> np.ndarray:
    if ds["task"] == "binary":
        return (frame[ds["label"]].astype(str) == ds["positive"]).to_numpy().astype(int)
    return frame[ds["label"]].map({b: i for i, b in enumerate(ds["brands"])}).to_numpy()


def score(ds: dict, y: np.ndarray, p: np.ndarray) -> float:
    if ds["task"] == "binary":
        return roc_auc_score(y, p[:, 1])
    return float(np.mean(p.argmax(1) == y))


def run_logistic(ds: dict, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> float:
    scaler = StandardScaler().fit(train[ds["numeric"]].fillna(train[ds["numeric"]].mean()))
    encoder = OneHotEncoder(handle_unknown="ignore").fit(train[ds["categorical"]].astype(str))

    def design(frame):
        numeric = scaler.transform(frame[ds["numeric"]].fillna(train[ds["numeric"]].mean()))
        return np.hstack([numeric, encoder.transform(frame[ds["categorical"]].astype(str)).toarray()])

    model = LogisticRegressionCV(Cs=10, cv=5, max_iter=5000, scoring="neg_log_loss", random_state=seed)
    model.fit(design(train), target(ds, train))
    return score(ds, target(ds, test), model.predict_proba(design(test)))


def run_lightgbm(ds: dict, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> float:
    categories = {c: sorted(train[c].astype(str).unique()) for c in ds["categorical"]}

    def design(frame):
        out = frame[ds["numeric"]].astype(float).reset_index(drop=True)
        for c, values in categories.items():
            out[c] = pd.Categorical(frame[c].astype(str).reset_index(drop=True), categories=values)
        return out

    x, y = design(train), target(ds, train)
    valid = np.random.default_rng(seed).random(len(x)) < 0.1
    if ds["task"] == "binary":
        objective = {"objective": "binary"}
    else:
        objective = {"objective": "multiclass", "num_class": len(ds["brands"])}
    best = None
    for leaves in (7, 15, 31):
        for min_leaf in (10, 40):
            params = {
                **objective, "learning_rate": 0.05, "num_leaves": leaves, "min_data_in_leaf": min_leaf,
                "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                "seed": seed, "verbosity": -1,
            }
            booster = lgb.train(
                params, lgb.Dataset(x[~valid], y[~valid]), num_boost_round=2000,
                valid_sets=[lgb.Dataset(x[valid], y[valid])],
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
            loss = booster.best_score["valid_0"]["binary_logloss" if ds["task"] == "binary" else "multi_logloss"]
            if best is None or loss < best[0]:
                best = (loss, booster)
    booster = best[1]
    p = booster.predict(design(test), num_iteration=booster.best_iteration)
    if ds["task"] == "binary":
        p = np.column_stack([1 - p, p])
    return score(ds, target(ds, test), p)


def main():
    upsell, seeds, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    records = []
    baselines = os.environ.get("UPSELL_BASELINES", "1") != "0"
    only = os.environ.get("UPSELL_DATASETS", "").split()
    for ds in DATASETS:
        if only and ds["name"] not in only:
            continue
        frame = pd.read_csv(ds["path"])
        if ds["task"] == "choice":
            frame["converted"] = 1
        for seed in range(1, seeds + 1):
            test_rows = np.random.default_rng(seed).random(len(frame)) < 0.2
            train, test = frame[~test_rows], frame[test_rows]
            with tempfile.TemporaryDirectory() as work:
                result = {
                    "dataset": ds["name"], "metric": "auc" if ds["task"] == "binary" else "accuracy",
                    "seed": seed, "train_rows": len(train), "test_rows": len(test),
                    "upsell": run_upsell(upsell, ds, train, test, seed, Path(work)),
                }
                if baselines:
                    result["logistic"] = run_logistic(ds, train, test, seed)
                    result["lightgbm"] = run_lightgbm(ds, train, test, seed)
            print(json.dumps(result), file=sys.stderr, flush=True)
            records.append(result)
    out.write_text(json.dumps(records, indent=1) + "\n")
    for name in dict.fromkeys(r["dataset"] for r in records):
        runs = [r for r in records if r["dataset"] == name]
        means = {m: round(float(np.mean([r[m] for r in runs])), 4) for m in ("upsell", "logistic", "lightgbm") if m in runs[0]}
        print(name, json.dumps(means), file=sys.stderr)


if __name__ == "__main__":
    main()
