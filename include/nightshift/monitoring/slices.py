"""Slice monitoring: drift and realised metrics per value of the spec's ``monitoring.slices`` features.

A model that is fine on average can fail one region or one customer segment. For every value of
every slice feature (categorical, derived ones included) a monitored day gets a row in
``monitoring.slice_drift`` (Evidently's drift share of that value's rows of the day's sample against
the reference rows of the same value) and, once the labels land, a row in
``monitoring.slice_performance`` (the realised metrics of that value's labelled rows). Values with
fewer than ``monitoring.min_slice_rows`` rows are written with their row count and not judged; for
the others, ``monitoring.performance_floors`` and ``max_decay`` apply as to the whole day, and a
breach is a retraining reason that names the slice, its value, its rows and the metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.pg import MONITORING_DDL_LOCK, insert_row, run_ddl

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

NULL_VALUE = "(null)"  # how a missing category is written in the value column
# Reference rows of a value below which its drift is measured against the whole reference sample.
MIN_REFERENCE_ROWS = 50

DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.slice_drift (
    model text NOT NULL,
    score_date date NOT NULL,
    model_version integer NOT NULL,
    feature text NOT NULL,
    value text NOT NULL,
    sampled_rows integer NOT NULL,
    reference_rows integer NOT NULL,
    judged boolean NOT NULL,
    features integer,
    drifted_features integer,
    drift_share double precision,
    drifted text[] NOT NULL DEFAULT '{}',
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date, feature, value)
);
CREATE TABLE IF NOT EXISTS monitoring.slice_performance (
    model text NOT NULL,
    score_date date NOT NULL,
    model_version integer NOT NULL,
    feature text NOT NULL,
    value text NOT NULL,
    labelled_rows integer NOT NULL,
    judged boolean NOT NULL,
    metrics jsonb NOT NULL DEFAULT '{}',
    roc_auc double precision,
    pr_auc double precision,
    accuracy double precision,
    f1_macro double precision,
    mae double precision,
    rmse double precision,
    r2 double precision,
    breached boolean NOT NULL,
    reasons text[] NOT NULL,
    note text,
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date, feature, value)
);
COMMENT ON TABLE monitoring.slice_drift IS
    'Nightshift: per model, scored day, slice feature and value: the drift share of that value''s sampled rows';
COMMENT ON TABLE monitoring.slice_performance IS
    'Nightshift: per model, labelled day, slice feature and value: realised metrics and broken floors/decay';
COMMENT ON COLUMN monitoring.slice_performance.judged IS
    'false: fewer than monitoring.min_slice_rows labelled rows (metrics not computed or not judged)';
COMMENT ON COLUMN monitoring.slice_drift.value IS 'The category value; (null) for rows without one';
"""
# The metrics that also have their own column (the headline metrics analysts sort by); all are in ``metrics``.
METRIC_COLUMNS = ("roc_auc", "pr_auc", "accuracy", "f1_macro", "mae", "rmse", "r2")


def ensure_tables(conn: connection) -> None:
    """Create ``monitoring.slice_drift`` and ``monitoring.slice_performance`` (idempotent)."""
    run_ddl(conn, MONITORING_DDL_LOCK, DDL, grant_schema="monitoring")


def slice_values(frame: pd.DataFrame, feature: str) -> pd.Series:
    """The slice column as text, missing values as :data:`NULL_VALUE`."""
    return frame[feature].astype(object).where(frame[feature].notna(), NULL_VALUE).astype(str)


@dataclass(frozen=True)
class SliceDrift:
    """Drift of one slice value's rows of a day (``drift_share`` None when not judged)."""

    feature: str
    value: str
    sampled_rows: int
    reference_rows: int
    judged: bool
    features: int | None = None
    drifted: tuple[str, ...] = ()
    drift_share: float | None = None


def slice_drift(spec: ModelSpec, reference: pd.DataFrame, current: pd.DataFrame) -> list[SliceDrift]:
    """Evidently's drift verdicts per slice value: that value's current rows against its reference rows.

    The reference of a value is the reference sample's rows of that value, or the whole sample when it
    holds fewer than :data:`MIN_REFERENCE_ROWS` of them. ``current`` and ``reference`` hold the spec's
    features (derived ones are computed when missing).
    """
    from include.nightshift.monitoring.drift import frame_for_drift, run_evidently

    cur, ref = frame_for_drift(spec, current), frame_for_drift(spec, reference)
    out = []
    for feature in spec.monitoring.slices:
        cur_values, ref_values = slice_values(cur, feature), slice_values(ref, feature)
        for value, rows in cur_values.value_counts().sort_index().items():
            value = str(value)
            ref_part = ref[ref_values == value]
            if len(ref_part) < MIN_REFERENCE_ROWS:
                ref_part = ref
            if rows < spec.monitoring.min_slice_rows:
                out.append(SliceDrift(feature, value, int(rows), len(ref_part), judged=False))
                continue
            result = run_evidently(spec, ref_part, cur[cur_values == value], html=False)
            out.append(
                SliceDrift(
                    feature,
                    value,
                    int(rows),
                    len(ref_part),
                    judged=True,
                    features=len(result.features),
                    drifted=tuple(result.drifted),
                    drift_share=result.share,
                )
            )
    return out


def write_slice_drift(
    conn: connection, model: str, day: date, version: int, rows: list[SliceDrift], dag_run_id: str
) -> None:
    """Replace the day's ``monitoring.slice_drift`` rows of the model."""
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM monitoring.slice_drift WHERE model = %s AND score_date = %s", (model, day))
        for r in rows:
            row: dict[str, Any] = {
                "model": model,
                "score_date": day,
                "model_version": version,
                "feature": r.feature,
                "value": r.value,
                "sampled_rows": r.sampled_rows,
                "reference_rows": r.reference_rows,
                "judged": r.judged,
                "features": r.features,
                "drifted_features": len(r.drifted) if r.judged else None,
                "drift_share": r.drift_share,
                "drifted": list(r.drifted),
                "dag_run_id": dag_run_id,
            }
            insert_row(cur, "monitoring.slice_drift", row)


@dataclass(frozen=True)
class SlicePerformance:
    """Realised metrics of one slice value's labelled rows, and the floors or decay it breaks."""

    feature: str
    value: str
    labelled_rows: int
    judged: bool
    metrics: dict[str, float] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    note: str = ""

    @property
    def where(self) -> str:
        return f"{self.feature}={self.value} ({self.labelled_rows} rows)"


def slice_performance(spec: ModelSpec, joined: pd.DataFrame, holdout: dict[str, float]) -> list[SlicePerformance]:
    """Per slice value: the realised metrics of the labelled rows and the reasons to retrain.

    Args:
        joined: The labelled day's scored rows with their label (the target column) and the slice
            features' values.
        holdout: The version's holdout metrics (what ``max_decay`` compares with).
    """
    from include.nightshift.monitoring.performance import decay_reasons, joined_metrics

    out = []
    for feature in spec.monitoring.slices:
        values = slice_values(joined, feature)
        for value, rows in values.value_counts().sort_index().items():
            value, rows = str(value), int(rows)
            if rows < spec.monitoring.min_slice_rows:
                out.append(SlicePerformance(feature, value, rows, judged=False, note="too few labelled rows"))
                continue
            try:
                metrics = joined_metrics(spec, joined[values == value])
            except DataValidationError as exc:  # a single class in the slice: no ROC AUC to judge
                out.append(SlicePerformance(feature, value, rows, judged=False, note=str(exc)))
                continue
            metrics.pop("labelled_rows", None)
            where = f"{feature}={value} ({rows} rows): "
            reasons = tuple(decay_reasons(spec, metrics, holdout, where))
            out.append(SlicePerformance(feature, value, rows, True, metrics, reasons))
    return out


def worst_slice(spec: ModelSpec, rows: list[SlicePerformance]) -> SlicePerformance | None:
    """The judged slice value with the worst headline metric (ROC AUC, accuracy or RMSE), or None."""
    from include.nightshift.spec import HIGHER_IS_BETTER

    metric = spec.headline_metric
    judged = [r for r in rows if r.judged and metric in r.metrics]
    if not judged:
        return None
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    return min(judged, key=lambda r: sign * r.metrics[metric])


def write_slice_performance(
    conn: connection, model: str, day: date, version: int, rows: list[SlicePerformance], dag_run_id: str
) -> None:
    """Replace the labelled day's ``monitoring.slice_performance`` rows of the model."""
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM monitoring.slice_performance WHERE model = %s AND score_date = %s", (model, day))
        for r in rows:
            row: dict[str, Any] = {
                "model": model,
                "score_date": day,
                "model_version": version,
                "feature": r.feature,
                "value": r.value,
                "labelled_rows": r.labelled_rows,
                "judged": r.judged,
                "metrics": dict(r.metrics),
                **{m: r.metrics.get(m) for m in METRIC_COLUMNS},
                "breached": bool(r.reasons),
                "reasons": list(r.reasons),
                "note": r.note or None,
                "dag_run_id": dag_run_id,
            }
            insert_row(cur, "monitoring.slice_performance", row)


def read_slice_features(spec: ModelSpec, features: pd.DataFrame) -> pd.DataFrame:
    """The entity key and the slice features of a day's landed features (derived ones computed)."""
    from include.nightshift.features import derive

    frame = derive(spec, features) if any(name in spec.monitoring.slices for name, _ in spec.derived) else features
    return frame[[spec.entity_key, *spec.monitoring.slices]]
