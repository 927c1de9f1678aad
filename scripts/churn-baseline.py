#!/usr/bin/env python3
"""A scikit-learn logistic regression on mlc_churn, on exactly the split that
`upsell train --config configs/mlc_churn.toml` uses, for comparison with the
network's validation AUC.

The split: a row is held out when xxh3_64(row index as 8 little-endian bytes,
seed) >> 11 < valid_fraction * 2^53 (src/data/split.rs, no id column).

    pip install scikit-learn xxhash pandas
    python3 scripts/churn-baseline.py
"""
import struct
import sys
from pathlib import Path

import pandas as pd
import xxhash
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

SEED = 42
VALID_FRACTION = 0.2

root = Path(__file__).resolve().parent.parent
data = pd.read_csv(root / "tests/data/mlc_churn.csv")
threshold = int(VALID_FRACTION * (1 << 53))
valid = [
    (xxhash.xxh3_64_intdigest(struct.pack("<Q", i), seed=SEED) >> 11) < threshold
    for i in range(len(data))
]
valid = pd.Series(valid)
y = (data.pop("churn") == "yes").astype(int)
categorical = ["state", "area_code", "international_plan", "voice_mail_plan"]
numeric = [c for c in data.columns if c not in categorical]
model = make_pipeline(
    ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    ),
    LogisticRegression(max_iter=5000),
)
model.fit(data[~valid], y[~valid])
auc = roc_auc_score(y[valid], model.predict_proba(data[valid])[:, 1])
print(f"rows: train {int((~valid).sum())}, valid {int(valid.sum())}")
print(f"logistic regression validation AUC: {auc:.4f}")
sys.exit(0)
