"""Benchmark: nightly scoring of one day into PostgreSQL, side by side with its baselines.

Every method runs in its own fresh process on the same rows and the same model, and reports rows/s and
its peak RSS:

- ``ours``: the scoring DAG's path (``include.nightshift.scoring`` and ``warehouse``): stream Parquet
  record batches, row rules, predict, Arrow CSV, COPY into staging, then build the partition's keys and
  publish it atomically. Timed end to end, and the load alone.
- ``to_sql``: read the day with pandas, predict, ``DataFrame.to_sql`` into the same partitioned table.
- ``predict_only``: read and predict the same batches with no database (the model's own limit).
- ``raw_copy``: COPY of pre-serialised CSV rows into a bare table (the database's own limit).

Then ``ours`` once more on ``--rss-rows`` rows, to show that peak memory does not grow with the day.

Usage::

    .venv/bin/python -m bench.scoring                 # 1M rows, RSS check at 5M
    .venv/bin/python -m bench.scoring --rows 200000 --rss-rows 1000000
    .venv/bin/python -m bench.scoring --methods ours,predict_only

The database is ``NIGHTSHIFT_DB_URL`` or the PostgreSQL that ``make run`` uses (a project-local one is
started if none answers); the benchmark works in its own database ``<prefix>_bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DAY = date(2026, 11, 20)
METHODS = ("ours", "to_sql", "predict_only", "raw_copy")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_input(spec, path: Path, rows: int, chunk: int = 250_000) -> None:
    """A day of ``rows`` synthetic feature rows, written chunk by chunk (1 in 500 breaks a rule)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols = {spec.entity_key: pa.array(np.arange(start, start + n, dtype=np.int64))}
        for f in spec.input_features:  # derived features are computed by the model
            if f.type == "category":
                cats = np.array(f.categories)
                cols[f.name] = pa.array(cats[rng.integers(0, len(cats), n)])
            else:
                lo, hi = f.min or 0.0, f.max or 100.0
                v = rng.uniform(lo, lo + (hi - lo) / 4, n)
                if f.type == "int":
                    v = np.floor(v).astype(np.int64)
                cols[f.name] = pa.array(v)
        bad = rng.random(n) < 0.002
        tenure = cols["tenure_months"].to_numpy(zero_copy_only=False).copy() if "tenure_months" in cols else None
        if tenure is not None:
            tenure[bad] = -1
            cols["tenure_months"] = pa.array(tenure)
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=chunk)
    writer.close()


def train(spec, path: Path, out: Path) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from include.nightshift.training import build_pipeline, model_input

    df = pq.ParquetFile(path).read_row_group(0).to_pandas().head(20_000)
    df = df[df["tenure_months"] >= 0]
    rng = np.random.default_rng(0)
    logit = -2 + 0.3 * df["support_calls_30d"] - 0.02 * df["tenure_months"] + rng.normal(0, 1, len(df))
    if spec.target.type == "regression":
        y = 60 + 12 * logit
    elif spec.target.type == "multiclass":
        classes = np.asarray(spec.target.classes)
        y = classes[np.digitize(logit, np.quantile(logit, np.linspace(0, 1, len(classes) + 1)[1:-1]))]
    else:
        y = (logit > 0).astype(int)
    model = build_pipeline(spec, spec.training.algorithm).fit(model_input(spec, df), y)
    out.write_bytes(pickle.dumps(model))


# --- the methods, each in a child process -----------------------------------------------------------


def _predict_only(spec, model, storage, uri: str, db_url: str, rows: int) -> dict:
    from include.nightshift import scoring

    rules = scoring.row_rules(spec)
    columns = [spec.entity_key, *spec.input_names]
    started = time.perf_counter()
    n = 0
    _, shards = scoring.inspect_input(storage, spec, uri)
    groups = tuple(g for s in shards for g in s.row_groups)
    for batch in scoring.iter_batches(storage, uri, columns, groups, spec.scoring.batch_rows):
        good, _, _ = scoring.split_batch(scoring.with_derived(spec, batch), rules)
        n += len(scoring.predict(spec, model, good))
    return {"seconds": time.perf_counter() - started, "scored": n}


def _ours(spec, model, storage, uri: str, db_url: str, rows: int) -> dict:
    import psycopg2

    from include.nightshift import scoring, warehouse

    conn, qconn = psycopg2.connect(db_url), psycopg2.connect(db_url)
    tables = warehouse.ensure_tables(conn, spec)
    started = time.perf_counter()
    total, shards = scoring.inspect_input(storage, spec, uri)
    lease = warehouse.claim(conn, tables, DAY, "bench", 30)
    consts = warehouse.Constants(DAY, spec.name, 1, "bench", "bench")
    jobs = [scoring.ShardJob(spec, tables, consts, storage, uri, s, model) for s in shards]
    results = [scoring.score_shard(conn, qconn, job, lease.heartbeat) for job in jobs]
    out: dict = {"load_seconds": time.perf_counter() - started}
    staged = warehouse.assemble(conn, tables, consts, len(shards))
    warehouse.publish(conn, lease, consts, staged, len(shards))
    out["seconds"] = time.perf_counter() - started
    out["scored"] = sum(r.scored_rows for r in results)
    out["quarantined"] = sum(r.quarantined_rows for r in results)
    assert out["scored"] + out["quarantined"] == total
    return out


def _to_sql(spec, model, storage, uri: str, db_url: str, rows: int) -> dict:
    import pandas as pd
    import psycopg2
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import JSONB

    from include.nightshift import warehouse

    conn = psycopg2.connect(db_url)
    tables = warehouse.ensure_tables(conn, spec)
    part = tables.partition(DAY)
    with conn, conn.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{tables.schema}"."{part}"')
        cur.execute(
            f'CREATE TABLE "{tables.schema}"."{part}" PARTITION OF "{tables.schema}"."{tables.scores}" '
            f"FOR VALUES FROM ('{DAY}') TO ('{DAY}'::date + 1)"
        )
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    started = time.perf_counter()
    df = storage.read_parquet(uri)
    df = df[df["tenure_months"].between(0, 120)]
    frame = pd.DataFrame(
        {
            spec.entity_key: df[spec.entity_key].to_numpy(),
            "score_date": DAY,
            **_outputs(spec, model, df),
            "model_name": spec.name,
            "model_version": 1,
            "mlflow_run_id": "bench",
            "dag_run_id": "bench",
            "scored_at": pd.Timestamp.now(tz="UTC"),
        }
    )
    dtype = {"class_scores": JSONB} if spec.target.type == "multiclass" else None
    frame.to_sql(
        tables.scores, engine, schema=tables.schema, if_exists="append", index=False, chunksize=50_000, dtype=dtype
    )
    return {"seconds": time.perf_counter() - started, "scored": len(frame)}


def _outputs(spec, model, df) -> dict:
    """The scored columns of the spec's type, as the to_sql baseline writes them (one frame, row by row)."""
    import json

    import numpy as np

    from include.nightshift.pipeline import predict_outputs
    from include.nightshift.training import model_input

    out = predict_outputs(spec, model, model_input(spec, df))
    if spec.target.type == "regression":
        return {"prediction": out}
    if spec.target.type == "multiclass":
        classes = list(spec.target.classes)
        best = out.argmax(axis=1)
        return {
            "predicted_class": np.asarray(classes, dtype=object)[best],
            "score": out[np.arange(len(best)), best],
            "class_scores": [json.dumps(dict(zip(classes, row.tolist(), strict=True))) for row in out],
        }
    return {"score": out, "predicted_label": (out >= spec.training.decision_threshold).astype("int16")}


def _raw_copy(spec, model, storage, uri: str, db_url: str, rows: int) -> dict:
    import io

    import numpy as np
    import psycopg2
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(1)
    scores = rng.random(rows)
    table = pa.table({"k": np.arange(rows, dtype=np.int64), "s": scores, "l": (scores > 0.35).astype(np.int8)})
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    buf.seek(0)
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_raw_copy")
        cur.execute("CREATE TABLE bench_raw_copy (k bigint, s double precision, l smallint)")
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        cur.copy_expert("COPY bench_raw_copy FROM STDIN WITH (FORMAT csv)", buf, size=1 << 20)
    return {"seconds": time.perf_counter() - started, "scored": rows}


RUNNERS = {"ours": _ours, "to_sql": _to_sql, "predict_only": _predict_only, "raw_copy": _raw_copy}


def child(method: str, spec_name: str, data: Path, model_path: Path, db_url: str, rows: int) -> dict:
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage

    if method not in RUNNERS:
        raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    spec = load_model(spec_name)
    model = pickle.loads(model_path.read_bytes())
    out: dict = {"method": method, "rows": rows}
    out.update(RUNNERS[method](spec, model, Storage(), data.as_uri(), db_url, rows))
    out["rows_per_s"] = out["scored"] / out["seconds"]
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def run_child(method: str, args: argparse.Namespace, data: Path, model_path: Path, db_url: str, rows: int) -> dict:
    cmd = [sys.executable, "-m", "bench.scoring", "--child", method, "--spec", args.spec, "--data", str(data)]
    cmd += ["--model", str(model_path), "--db-url", db_url, "--rows", str(rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def database_url() -> str:
    from scripts.stack.postgres import ensure_databases, ensure_postgres
    from scripts.stack.settings import Stack

    stack = Stack()
    server = ensure_postgres(stack)
    name = stack.db("bench")
    ensure_databases(server, [name], reset=True)
    return f"{server.rstrip('/')}/{name}"


def report(args: argparse.Namespace, results: dict[str, dict], big: dict | None) -> None:
    """The table of methods, then our path's split and its ratios to each baseline."""
    print(f"\n{'method':<14}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak RSS MB':>13}")
    for m, r in results.items():
        print(f"{m:<14}{r['scored']:>12,}{r['seconds']:>10.2f}{r['rows_per_s']:>12,.0f}{r['peak_rss_mb']:>13.0f}")
    if big:
        print(
            f"{'ours (big)':<14}{big['scored']:>12,}{big['seconds']:>10.2f}"
            f"{big['rows_per_s']:>12,.0f}{big['peak_rss_mb']:>13.0f}"
        )
    if "ours" in results:
        ours = results["ours"]
        print(
            f"\nours: load (stream, predict, COPY) {ours['load_seconds']:.2f} s; keys, index and swap "
            f"{ours['seconds'] - ours['load_seconds']:.2f} s; {ours['quarantined']:,} rows quarantined"
        )
        print("ratios (ours end to end):")
        targets = {"to_sql": ("the throughput of to_sql", 6.0), "predict_only": ("of predict-only throughput", 0.70)}
        for base, r in results.items():
            if base == "ours":
                continue
            ratio = ours["rows_per_s"] / r["rows_per_s"]
            label, target = targets.get(base, ("of raw COPY throughput", None))
            shown = f"{ratio:.2f}x" if base == "to_sql" else f"{ratio:.0%}"
            verdict = (
                "" if target is None else ("  (target met)" if ratio >= target else f"  (target {target:g} missed)")
            )
            print(f"  {base:<13} {shown:>7} {label}{verdict}")
        if big:
            growth = big["peak_rss_mb"] / ours["peak_rss_mb"]
            print(
                f"  peak RSS {args.rows:,} -> {args.rss_rows:,} rows: {ours['peak_rss_mb']:.0f} -> "
                f"{big['peak_rss_mb']:.0f} MB ({growth:.2f}x)"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the day (default 1M)")
    p.add_argument("--rss-rows", type=int, default=5_000_000, help="rows of the memory check (0: skip)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--spec", default="churn")
    p.add_argument(
        "--also",
        default="next_offer,customer_spend",
        help="models of other problem types scored beside --spec (ours, to_sql and predict-only); empty: none",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--db-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.spec, Path(args.data), Path(args.model), args.db_url, args.rows)))
        return 0

    from include.nightshift.spec import load_model

    spec = load_model(args.spec)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    db_url = os.environ.get("NIGHTSHIFT_BENCH_DB_URL") or database_url()
    cpus = os.cpu_count()
    print(f"scoring bench: model {spec.name}, {args.rows:,} rows, {cpus} CPUs, batch {spec.scoring.batch_rows:,} rows")
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as tmp:
        data, model_path = Path(tmp) / "day.parquet", Path(tmp) / "model.pkl"
        make_input(spec, data, args.rows)
        train(spec, data, model_path)
        results = {m: run_child(m, args, data, model_path, db_url, args.rows) for m in methods}
        big = None
        if args.rss_rows and "ours" in methods:
            big_data = Path(tmp) / "big.parquet"
            make_input(spec, big_data, args.rss_rows)
            big = run_child("ours", args, big_data, model_path, db_url, args.rss_rows)

    report(args, results, big)
    others = [m.strip() for m in args.also.split(",") if m.strip()]
    if others:
        compare_types(args, [(spec.name, results)] + [(m, score_model(args, m, db_url)) for m in others])
    return 0


def score_model(args: argparse.Namespace, name: str, db_url: str) -> dict[str, dict]:
    """Our path and its two baselines for another model, on a day of the same size."""
    from include.nightshift.spec import load_model

    spec = load_model(name)
    model_args = argparse.Namespace(**{**vars(args), "spec": name})
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as tmp:
        data, model_path = Path(tmp) / "day.parquet", Path(tmp) / "model.pkl"
        make_input(spec, data, args.rows)
        train(spec, data, model_path)
        return {
            m: run_child(m, model_args, data, model_path, db_url, args.rows) for m in ("ours", "to_sql", "predict_only")
        }


def compare_types(args: argparse.Namespace, runs: list[tuple[str, dict[str, dict]]]) -> None:
    """One line per model: our throughput and its ratios to to_sql and predict-only, by problem type."""
    from include.nightshift.spec import load_model

    print(f"\nby problem type ({args.rows:,} rows each; ours end to end):")
    print(f"{'model':<16}{'type':<12}{'ours rows/s':>13}{'to_sql rows/s':>15}{'x to_sql':>10}{'of predict-only':>17}")
    for name, r in runs:
        if not {"ours", "to_sql", "predict_only"} <= set(r):
            continue
        ours = r["ours"]["rows_per_s"]
        print(
            f"{name:<16}{load_model(name).target.type:<12}{ours:>13,.0f}{r['to_sql']['rows_per_s']:>15,.0f}"
            f"{ours / r['to_sql']['rows_per_s']:>9.2f}x{ours / r['predict_only']['rows_per_s']:>16.0%}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
