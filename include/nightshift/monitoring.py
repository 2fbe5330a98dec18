"""Drift and realised-performance monitoring, and the ``monitoring`` schema analysts chart.

Drift: the day's scoring input against the reference sample saved with the model version that
scored it (``reference/reference.parquet`` in its MLflow run). Evidently's ``DataDriftPreset`` picks
the test per feature (with a reference of more than 1,000 rows: normed Wasserstein distance for
numbers, Jensen-Shannon distance for categories, threshold 0.1) and gives the verdicts; we keep them
as they are. Evidently's cost grows with the rows it reads, and these distances are stable long
before 1M rows, so it reads a seeded random sample of the day (``monitoring.sample_rows``, seed
``training.random_seed``): ``bench/drift.py`` measures the time saved and the agreement with a run
on every row.

Realised performance: once the labels of a scored day have landed, the scores of that day (from the
warehouse) are joined with them and scored like the training holdout, plus a calibration error.

This module never imports Airflow; functions receive a psycopg2 connection or data frames.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage
    from include.nightshift.warehouse import Tables

log = logging.getLogger(__name__)

SCHEMA = "monitoring"
REPORT_NAME = "drift_report.html"


# --- the day's sample -----------------------------------------------------------------------------


def sample_day(storage: Storage, spec: ModelSpec, uri: str, max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """A seeded random sample of at most ``max_rows`` rows of a day's features, and the day's row count.

    Reads one row group at a time (memory is bounded by a row group plus the sample, not the day)
    and keeps each row with probability ``max_rows / rows``; the same file and seed give the same rows.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    columns = spec.feature_names
    with storage.open_input(uri) as f:
        pf = pq.ParquetFile(f)
        total = pf.metadata.num_rows
        missing = sorted(set(columns) - set(pf.schema_arrow.names))
        if missing:
            raise DataValidationError(f"{uri}: columns {missing} of spec {spec.name!r} are missing")
        rate = min(1.0, max_rows / total) if total else 1.0
        parts = []
        for i in range(pf.num_row_groups):
            group = pf.read_row_group(i, columns=columns)
            if rate < 1.0:
                group = group.filter(pa.array(rng.random(group.num_rows) < rate))
            parts.append(group)
    table = pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})
    if table.num_rows > max_rows:  # Bernoulli sampling overshoots by a few rows at most
        table = table.take(np.sort(rng.choice(table.num_rows, size=max_rows, replace=False)))
    return frame_for_drift(spec, table.to_pandas()), total


def frame_for_drift(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The spec's features with the types Evidently expects: float numbers, string categories."""
    out = df[spec.feature_names].copy()
    for f in spec.features:
        if f.type == "category":
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
        else:
            out[f.name] = out[f.name].astype("float64")
    return out


# --- drift --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict: the test Evidently chose, its statistic and threshold, and whether it drifted."""

    feature: str
    stattest: str
    statistic: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    reference_rows: int
    sampled_rows: int
    html: str = field(repr=False, default="")

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.features) if self.features else 0.0


def run_evidently(spec: ModelSpec, reference: pd.DataFrame, current: pd.DataFrame, html: bool = True) -> DriftResult:
    """Run Evidently's data drift preset and data summary on ``current`` against ``reference``.

    Returns the per-feature verdicts (Evidently's own tests) and, with ``html``, the report as HTML.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    definition = DataDefinition(numerical_columns=spec.numeric_features, categorical_columns=spec.categorical_features)
    ref = frame_for_drift(spec, reference)
    cur = frame_for_drift(spec, current)
    report = Report(
        [DataDriftPreset(columns=spec.feature_names, drift_share=spec.monitoring.drift_share), DataSummaryPreset()],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition)
    )
    return DriftResult(
        features=feature_verdicts(snapshot),
        reference_rows=len(ref),
        sampled_rows=len(cur),
        html=snapshot.get_html_str(as_iframe=False) if html else "",
    )


def feature_verdicts(snapshot: Any) -> list[FeatureDrift]:
    """The ``ValueDrift`` metric and test of each feature in an Evidently snapshot."""
    values = {m["id"]: m["value"] for m in snapshot.dict()["metrics"]}
    out = []
    for test in snapshot.tests_results:
        params = test.metric_config.params
        if not str(params.get("type", "")).endswith(":ValueDrift"):
            continue
        out.append(
            FeatureDrift(
                feature=params["column"],
                stattest=params["method"],
                statistic=float(values[test.metric_config.metric_id]),
                threshold=float(params["threshold"]),
                drifted=test.status.value == "FAIL",
            )
        )
    return out


# --- realised performance ---------------------------------------------------------------------------


def calibration_error(labels: Any, scores: Any, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted gap between mean score and positive rate per score decile."""
    import numpy as np

    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    which = np.minimum((s * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(s[mask].mean() - y[mask].mean())
    return float(total / len(y)) if len(y) else 0.0


def realised_performance(spec: ModelSpec, scores: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """Metrics of one day's published scores against the labels that arrived for that day.

    Args:
        scores: The day's rows of ``<model>_scores`` (entity key, ``score``).
        labels: The day's labels (entity key, target).

    Raises:
        DataValidationError: Fewer than ``monitoring.min_labelled_rows`` scored rows have a label,
            or the labels hold a single class.
    """
    from include.nightshift.training import evaluate

    key, target = spec.entity_key, spec.target.name
    joined = scores[[key, "score"]].merge(labels[[key, target]].dropna(), on=key, how="inner")
    need = spec.monitoring.min_labelled_rows
    if len(joined) < need:
        raise DataValidationError(
            f"only {len(joined)} scored rows have a label (monitoring.min_labelled_rows is {need})"
        )
    if joined[target].nunique() < 2:
        raise DataValidationError(f"labels column {target!r} holds one class only ({joined[target].iloc[0]!r})")
    metrics = evaluate(joined[target], joined["score"], spec.training.decision_threshold)
    metrics["calibration_error"] = calibration_error(joined[target], joined["score"])
    metrics["mean_score"] = float(joined["score"].mean())
    metrics["labelled_rows"] = float(len(joined))
    return metrics


def decay_reasons(spec: ModelSpec, realised: dict[str, float], champion_holdout: dict[str, float]) -> list[str]:
    """Why realised performance asks for retraining: a floor broken, or too far below the holdout."""
    from include.nightshift.spec import HIGHER_IS_BETTER

    reasons = []
    for metric, floor in spec.monitoring.performance_floors.items():
        value = realised.get(metric)
        if value is None:
            continue
        worse = value < floor if HIGHER_IS_BETTER[metric] else value > floor
        if worse:
            rule = ">=" if HIGHER_IS_BETTER[metric] else "<="
            reasons.append(f"{metric} {value:.4f} breaks monitoring.performance_floors.{metric} ({rule} {floor})")
    for metric, allowed in spec.monitoring.max_decay.items():
        value, base = realised.get(metric), champion_holdout.get(metric)
        if value is None or base is None:
            continue
        decay = base - value if HIGHER_IS_BETTER[metric] else value - base
        if decay > allowed:
            reasons.append(
                f"{metric} {value:.4f} is {decay:.4f} worse than the model's holdout {base:.4f} "
                f"(monitoring.max_decay.{metric} is {allowed})"
            )
    return reasons


# --- the monitoring schema -------------------------------------------------------------------------

DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.drift_runs (
    model text NOT NULL,
    score_date date NOT NULL,
    model_version text NOT NULL,
    mlflow_run_id text NOT NULL,
    current_rows bigint NOT NULL,
    sampled_rows integer NOT NULL,
    sample_seed bigint NOT NULL,
    reference_rows integer NOT NULL,
    features integer NOT NULL,
    drifted_features integer NOT NULL,
    drift_share double precision NOT NULL,
    drift_share_threshold double precision NOT NULL,
    drifted text[] NOT NULL,
    retraining_requested boolean NOT NULL,
    report_uri text NOT NULL,
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date)
);
CREATE TABLE IF NOT EXISTS monitoring.drift_features (
    model text NOT NULL,
    score_date date NOT NULL,
    feature text NOT NULL,
    stattest text NOT NULL,
    statistic double precision NOT NULL,
    threshold double precision NOT NULL,
    drifted boolean NOT NULL,
    PRIMARY KEY (model, score_date, feature)
);
CREATE TABLE IF NOT EXISTS monitoring.performance (
    model text NOT NULL,
    score_date date NOT NULL,
    model_version text NOT NULL,
    labelled_rows integer NOT NULL,
    roc_auc double precision,
    pr_auc double precision,
    precision double precision,
    recall double precision,
    brier double precision,
    calibration_error double precision,
    mean_score double precision,
    positive_rate double precision,
    holdout_roc_auc double precision,
    decayed boolean NOT NULL,
    reasons text[] NOT NULL,
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date)
);
CREATE TABLE IF NOT EXISTS monitoring.alerts (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    model text,
    dag_id text NOT NULL,
    task_id text NOT NULL DEFAULT '',
    map_index integer NOT NULL DEFAULT -1,
    run_id text NOT NULL,
    logical_date text,
    try_number integer NOT NULL DEFAULT 0,
    max_tries integer,
    error text NOT NULL,
    log_url text,
    runbook_url text,
    channels text[] NOT NULL DEFAULT '{}',
    UNIQUE (kind, dag_id, run_id, task_id, map_index, try_number)
);
CREATE TABLE IF NOT EXISTS monitoring.promotions (
    id bigserial PRIMARY KEY,
    moved_at timestamptz NOT NULL DEFAULT now(),
    model text NOT NULL,
    from_version text,
    to_version text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('gate', 'force', 'rollback')),
    reason text NOT NULL,
    requested_by text NOT NULL,
    approved_by text,
    dag_id text NOT NULL,
    run_id text NOT NULL
);
COMMENT ON TABLE monitoring.drift_runs IS
    'Nightshift: one row per model and scored day: how many features drifted against the reference';
COMMENT ON TABLE monitoring.drift_features IS
    'Nightshift: per model, day and feature: the drift test Evidently chose, its statistic, threshold, verdict';
COMMENT ON TABLE monitoring.performance IS
    'Nightshift: realised metrics of a scored day once its labels arrived';
COMMENT ON TABLE monitoring.alerts IS
    'Nightshift: every alert sent to on-call (task failures, missed deadlines, drift, decay)';
COMMENT ON TABLE monitoring.promotions IS
    'Nightshift: every move of a model''s @champion alias: from and to which version, why, who asked, who approved';
"""


def ensure_schema(conn: connection) -> None:
    """Create the monitoring tables (idempotent) and let the analyst role read them when it exists."""
    from include.nightshift.warehouse import ANALYST_ROLE, role_exists

    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('nightshift monitoring ddl'))")
        cur.execute(DDL)
        if role_exists(cur, ANALYST_ROLE):
            grant_analyst(cur)


def grant_analyst(cur: Any) -> None:
    from include.nightshift.warehouse import ANALYST_ROLE

    cur.execute(
        f"GRANT USAGE ON SCHEMA monitoring TO {ANALYST_ROLE};"
        f"GRANT SELECT ON ALL TABLES IN SCHEMA monitoring TO {ANALYST_ROLE};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA monitoring GRANT SELECT ON TABLES TO {ANALYST_ROLE};"
    )


@dataclass(frozen=True)
class DriftRun:
    model: str
    score_date: date
    model_version: str
    mlflow_run_id: str
    current_rows: int
    sample_seed: int
    drift_share_threshold: float
    report_uri: str
    dag_run_id: str


def write_drift(conn: connection, run: DriftRun, result: DriftResult, retraining_requested: bool) -> None:
    """Replace the day's drift rows for the model, in one transaction."""
    from psycopg2.extras import execute_values

    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM monitoring.drift_features WHERE model = %s AND score_date = %s", (run.model, run.score_date)
        )
        cur.execute(
            "DELETE FROM monitoring.drift_runs WHERE model = %s AND score_date = %s", (run.model, run.score_date)
        )
        row = asdict(run)
        row.update(
            sampled_rows=result.sampled_rows,
            reference_rows=result.reference_rows,
            features=len(result.features),
            drifted_features=len(result.drifted),
            drift_share=result.share,
            drifted=result.drifted,
            retraining_requested=retraining_requested,
        )
        cols = list(row)
        cur.execute(
            f"INSERT INTO monitoring.drift_runs ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
            [row[c] for c in cols],
        )
        execute_values(
            cur,
            "INSERT INTO monitoring.drift_features (model, score_date, feature, stattest, statistic, threshold, "
            "drifted) VALUES %s",
            [
                (run.model, run.score_date, f.feature, f.stattest, f.statistic, f.threshold, f.drifted)
                for f in result.features
            ],
        )


def write_performance(conn: connection, row: dict[str, Any]) -> None:
    """Replace the day's realised-performance row for the model."""
    cols = list(row)
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM monitoring.performance WHERE model = %s AND score_date = %s", (row["model"], row["score_date"])
        )
        cur.execute(
            f"INSERT INTO monitoring.performance ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
            [row[c] for c in cols],
        )


def read_day_scores(conn: connection, tables: Tables, day: date) -> pd.DataFrame:
    """A published day's entity keys, scores and model version, from ``<schema>.<model>_scores``."""
    import pandas as pd
    from psycopg2 import sql

    query = sql.SQL("SELECT {key}, score, model_version FROM {scores} WHERE score_date = %s").format(
        key=sql.Identifier(tables.key), scores=sql.Identifier(tables.schema, tables.scores)
    )
    with conn.cursor() as cur:
        cur.execute(query, (day,))
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=[tables.key, "score", "model_version"])


def published_day(conn: connection, tables: Tables, day: date | None) -> dict[str, Any] | None:
    """The published day ``day`` (or the latest one): its date, rows, model version and run."""
    from psycopg2 import sql

    where = sql.SQL("WHERE score_date = %s") if day else sql.SQL("")
    query = sql.SQL(
        "SELECT score_date, count(*), min(model_version), max(model_version), min(mlflow_run_id), max(scored_at) "
        "FROM {scores} {where} "
        "GROUP BY score_date ORDER BY score_date DESC LIMIT 1"
    ).format(scores=sql.Identifier(tables.schema, tables.scores), where=where)
    with conn.cursor() as cur:
        cur.execute(query, (day,) if day else ())
        row = cur.fetchone()
    if not row:
        return None
    return {"score_date": row[0], "rows": row[1], "model_version": row[3], "mlflow_run_id": row[4], "scored_at": row[5]}


def unmonitored_days(conn: connection, tables: Tables, model: str, lookback_days: int = 35) -> list[date]:
    """Published days of the last ``lookback_days`` (before the newest) with no drift result newer than their load.

    Asset-triggered runs use it besides their events' dates: when days are published while a monitoring
    run is busy, Airflow can fold an event into a run created before it (it then reaches no run), and
    a day re-scored after it was monitored must be looked at again. One row is read per partition.
    """
    from psycopg2 import sql

    from include.nightshift.warehouse import partition_days

    days = partition_days(conn, tables)
    if not days:
        return []
    with conn.cursor() as cur:
        recent = [d for d in days if (days[-1] - d).days <= lookback_days]
        cur.execute(
            "SELECT score_date, computed_at FROM monitoring.drift_runs WHERE model = %s AND score_date = ANY(%s)",
            (model, recent),
        )
        monitored = dict(cur.fetchall())
        loaded = sql.SQL("SELECT scored_at FROM {} WHERE score_date = %s LIMIT 1").format(
            sql.Identifier(tables.schema, tables.scores)
        )
        pending = []
        for day in recent:
            if day not in monitored:
                pending.append(day)
                continue
            cur.execute(loaded, (day,))
            row = cur.fetchone()
            if row and row[0] > monitored[day]:
                pending.append(day)
    return pending
