"""A synthetic, realistic customer data set written as daily partitions (Parquet or CSV, as the spec lands).

Each day a sample of a fixed customer population is observed (numeric and categorical features,
missing values); the label for a day's features lands ``label_delay_days`` later. The label follows
the spec's target type, from the same customers and signals: churn within 30 days (binary, about
15 % churners), the offer a customer takes (multiclass, over the spec's classes) or the spend of
the next 30 days (regression). Options inject drift or bad data on chosen days, for tests and demos.

Run ``python -m include.nightshift.sample --help``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal, get_args

from include.nightshift.storage import Storage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

BadKind = Literal["missing_column", "wrong_dtype", "out_of_range", "empty"]
BAD_KINDS: tuple[str, ...] = get_args(BadKind)

CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["card", "bank-transfer", "direct-debit", "voucher"]
REGIONS = ["north", "south", "east", "west", "central"]


@dataclass(frozen=True)
class SampleOptions:
    """What to generate.

    Args:
        start: First feature date.
        end: Last feature date (inclusive). Labels are written up to ``end - label_delay``.
        rows_per_day: Customers observed per day.
        population: Size of the customer base.
        seed: Everything is a pure function of the seed and the date.
        drift_from: From this date on, charges, contracts and support calls shift.
        bad_dates: Days whose features partition is broken in the way ``bad_kind`` says.
    """

    start: date
    end: date
    rows_per_day: int = 2000
    population: int = 50_000
    seed: int = 7
    drift_from: date | None = None
    bad_dates: tuple[date, ...] = ()
    bad_kind: BadKind = "out_of_range"
    label_delay_days: int = 7
    write_labels: bool = True


def _population(n: int, seed: int) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(100_000, 100_000 + n, dtype="int64"),
            "start_tenure": rng.gamma(2.0, 14.0, n).clip(0, 100),
            "base_charges": rng.normal(68, 22, n).clip(15, 250),
            "contract_type": rng.choice(CONTRACTS, n, p=[0.55, 0.25, 0.20]),
            "payment_method": rng.choice(PAYMENTS, n, p=[0.4, 0.25, 0.25, 0.10]),
            "region": rng.choice(REGIONS, n, p=[0.2, 0.2, 0.2, 0.2, 0.2]),
            "call_rate": rng.gamma(1.2, 0.9, n),
            "usage_base": rng.lognormal(2.5, 0.8, n),
        }
    )


def features_for_day(pop: pd.DataFrame, day: date, opts: SampleOptions) -> tuple[pd.DataFrame, np.ndarray]:
    """The features observed on ``day`` and the churn probability behind each row."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([opts.seed, day.toordinal()])
    idx = rng.choice(len(pop), size=min(opts.rows_per_day, len(pop)), replace=False)
    p = pop.iloc[np.sort(idx)]
    n = len(p)
    age_days = (day - opts.start).days
    drifted = opts.drift_from is not None and day >= opts.drift_from

    tenure = np.floor(p["start_tenure"].to_numpy() + age_days / 30.0).astype("int64").clip(0, 120)
    charges = p["base_charges"].to_numpy() * rng.normal(1.0, 0.03, n)
    contract = p["contract_type"].to_numpy().copy()
    calls = rng.poisson(p["call_rate"].to_numpy())
    if drifted:
        charges = charges * 1.35 + 12
        flip = rng.random(n) < 0.35
        contract[flip] = "month-to-month"
        calls = calls + rng.poisson(1.5, n)
    charges = charges.clip(10, 480).round(2)
    total = (charges * np.maximum(tenure, 1) * rng.normal(1.0, 0.05, n)).clip(0, 59_000).round(2)
    usage = (p["usage_base"].to_numpy() * rng.normal(1.0, 0.2, n)).clip(0, 1900).round(3)
    payment = p["payment_method"].to_numpy().astype(object)

    # Missing values, as real extracts have them.
    total[rng.random(n) < 0.02] = np.nan
    usage[rng.random(n) < 0.05] = np.nan
    payment[rng.random(n) < 0.01] = None

    df = pd.DataFrame(
        {
            "customer_id": p["customer_id"].to_numpy(),
            "tenure_months": tenure,
            "monthly_charges": charges,
            "total_charges": total,
            "support_calls_30d": calls.astype("int64"),
            "data_usage_gb": usage,
            "contract_type": contract,
            "payment_method": payment,
            "region": p["region"].to_numpy(),
        }
    )
    logit = (
        -2.3
        + 1.3 * (contract == "month-to-month")
        - 0.6 * (contract == "two-year")
        - 0.035 * tenure
        + 0.014 * (charges - 70)
        + 0.38 * calls
        + 0.6 * (df["payment_method"].to_numpy() == "voucher")
        - 0.004 * np.nan_to_num(usage, nan=12.0)
        + 0.25 * (df["region"].to_numpy() == "south")
    )
    prob = 1.0 / (1.0 + np.exp(-logit))
    return df, prob


def break_features(df: pd.DataFrame, kind: BadKind, seed: int) -> pd.DataFrame:
    """Return a copy of ``df`` broken the way ``kind`` says."""
    import numpy as np

    bad = df.copy()
    if kind == "missing_column":
        return bad.drop(columns=["monthly_charges"])
    if kind == "wrong_dtype":
        bad["tenure_months"] = bad["tenure_months"].astype(str) + " months"
        return bad
    if kind == "out_of_range":
        rng = np.random.default_rng(seed)
        rows = rng.choice(len(bad), size=max(1, len(bad) // 20), replace=False)
        bad.loc[bad.index[rows], "tenure_months"] = -5
        return bad
    if kind == "empty":
        return bad.iloc[0:0]
    raise ValueError(f"bad_kind {kind!r} is not one of {BAD_KINDS}")


def labels_for_day(spec: ModelSpec, feats: pd.DataFrame, prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The label of each row, of the spec's target type, from the same signals as the churn probability."""
    import numpy as np

    kind = spec.target.type
    if kind == "binary":
        return (rng.random(len(feats)) < prob).astype("int64")
    charges = feats["monthly_charges"].to_numpy(dtype=float)
    usage = np.nan_to_num(feats["data_usage_gb"].to_numpy(dtype=float), nan=12.0)
    calls = feats["support_calls_30d"].to_numpy(dtype=float)
    if kind == "regression":
        spend = charges * (1.0 - 0.6 * prob) + 0.9 * np.log1p(usage) * 10 + 4.0 * calls + rng.normal(0, 6, len(feats))
        lo, hi = spec.target.min, spec.target.max
        return np.clip(spend, -np.inf if lo is None else lo, np.inf if hi is None else hi).round(2)
    classes = list(spec.target.classes or ())
    tenure = feats["tenure_months"].to_numpy(dtype=float)
    # Standardised signals and fixed per-class weights: every class is taken by a fair share of customers
    # (the first class, usually "none", by the most), and the features tell them apart.
    signals = np.column_stack([prob, charges, np.log1p(usage), tenure, calls])
    signals = (signals - signals.mean(axis=0)) / (signals.std(axis=0) + 1e-9)
    weights = np.random.default_rng(len(classes)).normal(0, 1.2, (signals.shape[1], len(classes)))
    intercepts = np.where(np.arange(len(classes)) == 0, 0.8, 0.0)
    logits = signals @ weights + intercepts + rng.gumbel(size=(len(feats), len(classes)))
    return np.asarray(classes, dtype=object)[logits.argmax(axis=1)]


def _write(storage: Storage, spec: ModelSpec, df: pd.DataFrame, uri: str) -> None:
    if spec.landing.format == "csv":
        storage.write_bytes(df.to_csv(index=False).encode(), uri)
    else:
        storage.write_parquet(df, uri)


def generate(spec: ModelSpec, root: str, opts: SampleOptions, storage: Storage | None = None) -> dict[str, int]:
    """Write features (and labels, where they have arrived) for every day in the range.

    Returns:
        Counts: days, feature rows and label rows written.
    """
    import numpy as np
    import pandas as pd

    storage = storage or Storage()
    pop = _population(opts.population, opts.seed)
    label_cutoff = opts.end - timedelta(days=opts.label_delay_days)
    counts = {"days": 0, "feature_rows": 0, "label_rows": 0}
    day = opts.start
    while day <= opts.end:
        feats, prob = features_for_day(pop, day, opts)
        rng = np.random.default_rng([opts.seed, day.toordinal(), 1])
        labels = pd.DataFrame(
            {
                spec.entity_key: feats["customer_id"].to_numpy(),
                spec.target.name: labels_for_day(spec, feats, prob, rng),
            }
        )
        out = feats.rename(columns={"customer_id": spec.entity_key})
        if day in opts.bad_dates:
            out = break_features(out, opts.bad_kind, opts.seed)
        _write(storage, spec, out, spec.landing.features(root, day.isoformat()))
        counts["feature_rows"] += len(out)
        if opts.write_labels and day <= label_cutoff:
            _write(storage, spec, labels, spec.landing.labels(root, day.isoformat()))
            counts["label_rows"] += len(labels)
        counts["days"] += 1
        day += timedelta(days=1)
    log.info("wrote %(days)d days: %(feature_rows)d feature rows, %(label_rows)d label rows", counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    from include.nightshift.spec import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="churn", help="spec name under include/models/")
    ap.add_argument("--root", required=True, help="landing root URI, file:///... or s3://bucket/prefix")
    ap.add_argument("--end", type=date.fromisoformat, default=date.today(), help="last feature date")
    ap.add_argument("--days", type=int, default=42, help="number of days ending at --end")
    ap.add_argument("--rows-per-day", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--drift-from", type=date.fromisoformat, default=None)
    ap.add_argument("--bad-date", type=date.fromisoformat, action="append", default=[])
    ap.add_argument("--bad-kind", choices=BAD_KINDS, default="out_of_range")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = load_model(args.model)
    opts = SampleOptions(
        start=args.end - timedelta(days=args.days - 1),
        end=args.end,
        rows_per_day=args.rows_per_day,
        seed=args.seed,
        drift_from=args.drift_from,
        bad_dates=tuple(args.bad_date),
        bad_kind=args.bad_kind,
        label_delay_days=spec.target.label_delay_days,
    )
    generate(spec, args.root, opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
