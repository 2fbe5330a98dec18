"""Benchmark: the monitoring DAG's drift step against Evidently on every row of the day, in one run.

Both read the same day of features from a Parquet file and compare it with the same reference (a
sample of training-like data, ``training.reference_sample_rows`` rows, as saved with a model version):

- ``ours``: what ``<model>_monitoring.drift`` does: a seeded random sample of the day
  (``monitoring.sample_rows`` rows, seed ``training.random_seed``, read one row group at a time), then
  Evidently's data drift preset and data summary on it, and the HTML report.
- ``evidently_all``: read the whole day, run the same Evidently report on every row, and the HTML.

The day has the generator's drift on some features and none on others, so the verdicts are not all
the same. Prints both times, the ratio, and per feature both statistics and verdicts, and how many
verdicts agree.

Usage::

    .venv/bin/python -m bench.drift                  # 1M rows, sample of monitoring.sample_rows
    .venv/bin/python -m bench.drift --rows 200000 --sample-rows 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DAY = date(2026, 11, 20)


def make_day(spec, path: Path, rows: int, chunk: int = 100_000) -> None:
    """``rows`` rows of features for a drifted day, written in row groups of ``chunk`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.sample import SampleOptions, _population, features_for_day

    writer = None
    for i, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        opts = SampleOptions(
            start=DAY - timedelta(days=40), end=DAY, rows_per_day=n, population=n, seed=100 + i, drift_from=DAY
        )
        df, _ = features_for_day(_population(n, 100 + i), DAY, opts)
        table = pa.Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def make_reference(spec):
    """A reference like the one saved at training: a sample of clean days before the drift."""
    import pandas as pd

    from include.nightshift.sample import SampleOptions, _population, features_for_day

    opts = SampleOptions(start=DAY - timedelta(days=40), end=DAY, rows_per_day=2000)
    pop = _population(opts.population, opts.seed)
    days = [features_for_day(pop, DAY - timedelta(days=d), opts)[0] for d in range(20, 30)]
    return pd.concat(days).sample(n=spec.training.reference_sample_rows, random_state=spec.training.random_seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sample-rows", type=int, default=None, help="default: the churn spec's monitoring.sample_rows")
    args = ap.parse_args(argv)

    from include.nightshift import monitoring
    from include.nightshift.spec import load_spec
    from include.nightshift.storage import Storage

    spec = load_spec(ROOT / "include" / "models" / "churn.yaml")
    sample_rows = args.sample_rows or spec.monitoring.sample_rows
    seed = spec.training.random_seed
    reference = make_reference(spec)
    # Warm-up, untimed: the first Evidently report in a process pays for imports and caches.
    monitoring.run_evidently(spec, reference, reference.head(2000))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.parquet"
        make_day(spec, path, args.rows)
        uri = path.as_uri()

        t = time.perf_counter()
        current, total = monitoring.sample_day(Storage(), spec, uri, sample_rows, seed)
        ours = monitoring.run_evidently(spec, reference, current)
        ours_s = time.perf_counter() - t

        t = time.perf_counter()
        everything = Storage().read_parquet(uri, columns=spec.feature_names)
        full = monitoring.run_evidently(spec, reference, everything)
        full_s = time.perf_counter() - t

    print(f"drift step on {total:,} current rows against {len(reference):,} reference rows")
    print(f"{'ours':<15} {ours_s:8.2f} s   (seeded sample of {ours.sampled_rows:,} rows, seed {seed}, with HTML)")
    print(f"{'evidently_all':<15} {full_s:8.2f} s   (every row, with HTML)")
    print(f"ours takes {ours_s / full_s:.1%} of the time of Evidently on all rows ({full_s / ours_s:.1f}x faster)")
    print()
    print(f"{'feature':<20} {'test':<31} {'sample':>8} {'all rows':>9} {'thr':>5}  verdicts")
    agree = 0
    by_name = {f.feature: f for f in full.features}
    for f in ours.features:
        g = by_name[f.feature]
        same = f.drifted == g.drifted
        agree += same
        verdict = ("drift" if f.drifted else "ok") + " / " + ("drift" if g.drifted else "ok")
        print(
            f"{f.feature:<20} {f.stattest:<31} {f.statistic:8.4f} {g.statistic:9.4f} {f.threshold:5.2f}  "
            f"{verdict}{'' if same else '  DIFFERENT'}"
        )
    gap = max(abs(f.statistic - by_name[f.feature].statistic) for f in ours.features)
    print(
        f"verdicts agree on {agree} of {len(ours.features)} features; largest statistic difference {gap:.4f}; "
        f"drifted: {len(ours.drifted)} (sample) / {len(full.drifted)} (all rows)"
    )
    return 0 if agree == len(ours.features) else 1


if __name__ == "__main__":
    sys.exit(main())
