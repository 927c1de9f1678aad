"""How much a training log says about the contexts: each context's rows and
conversion rate, and its log-odds of converting against a reference
context's, with the difference's standard error. A context whose difference
is within a standard error or two is one the data barely tells apart from
the reference, whatever a model then learns.

    python scripts/context_signal.py [--by surface] [--reference home_banner] [--where 'active_days_28d <= 8'] EXPOSURES.parquet...

--by names the context column(s) to group by (repeat for several; default
surface); --reference the reference value (default: the most logged);
--where a pandas query on the rows first (a segment). Rows with no offer (a
no-offer holdout) are left out. The standard error is the delta method's,
sqrt(1 / (n1 p1 (1 - p1)) + 1 / (n0 p0 (1 - p0))). Needs pandas and pyarrow
(scripts/decision-quality.sh's environment has both).
"""

import argparse

import numpy as np
import pandas as pd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--by", action="append")
    parser.add_argument("--reference")
    parser.add_argument("--where")
    parser.add_argument("--offer-column", default="offer")
    parser.add_argument("--no-offer", default="none")
    parser.add_argument("--converted", default="converted")
    args = parser.parse_args()
    by = args.by or ["surface"]
    rows = pd.concat([pd.read_parquet(f) for f in args.files], ignore_index=True)
    if args.offer_column in rows:
        rows = rows[rows[args.offer_column].notna() & (rows[args.offer_column] != args.no_offer)]
    if args.where:
        rows = rows.query(args.where)
    rows = rows.assign(context=rows[by].astype(str).agg(" / ".join, axis=1))
    groups = rows.groupby("context")[args.converted].agg(["size", "mean"])
    reference = args.reference or groups["size"].idxmax()
    if reference not in groups.index:
        raise SystemExit(f"--reference {reference!r}: no such context in {list(groups.index)}")

    def logit(p):
        return np.log(p / (1 - p))

    def information(n, p):
        return 1.0 / (n * p * (1 - p))

    n0, p0 = groups.loc[reference]
    print(f"{len(rows)} rows{' where ' + args.where if args.where else ''}; reference {reference}")
    print()
    print("| context | rows | conversion | log-odds vs reference | standard errors |")
    print("|---|---:|---:|---:|---:|")
    for context, (n, p) in groups.iterrows():
        if context == reference:
            print(f"| {context} | {int(n):,} | {p:.2%} | | |")
            continue
        diff = logit(p) - logit(p0)
        se = np.sqrt(information(n, p) + information(n0, p0))
        print(f"| {context} | {int(n):,} | {p:.2%} | {diff:+.3f} ± {se:.3f} | {diff / se:+.1f} |")


if __name__ == "__main__":
    main()
