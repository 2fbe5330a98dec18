"""Realised performance: once the labels of a scored day have landed, how good were its scores?

The day's published scores (from the warehouse) are joined with its labels and scored like the
training holdout, plus a calibration error; the result is one ``monitoring.performance`` row, and a
list of reasons to retrain when it breaks the spec's floors or decays below the version's holdout.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.pg import insert_row

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    from mlflow import MlflowClient
    from psycopg2.extensions import connection

    from include.nightshift.monitoring.days import MonitoredDay
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class PerformanceRow:
    """One ``monitoring.performance`` row: a labelled day's realised metrics against the version's holdout."""

    model: str
    score_date: date
    model_version: int
    labelled_rows: int
    roc_auc: float
    pr_auc: float
    precision: float
    recall: float
    brier: float
    calibration_error: float
    mean_score: float
    positive_rate: float
    holdout_roc_auc: float | None
    decayed: bool
    reasons: list[str] = field(default_factory=list)
    dag_run_id: str = ""


def write_performance(conn: connection, row: PerformanceRow) -> None:
    """Replace the day's realised-performance row for the model."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM monitoring.performance WHERE model = %s AND score_date = %s", (row.model, row.score_date)
        )
        insert_row(cur, "monitoring.performance", asdict(row))


@dataclass(frozen=True)
class PerformanceCheck:
    """The outcome of :func:`measure_day`: the row written, or why there was nothing to measure."""

    labelled_date: date
    row: PerformanceRow | None = None
    skipped: str | None = None

    @property
    def reasons(self) -> list[str]:
        return list(self.row.reasons) if self.row else []


def measure_day(
    storage: Storage, client: MlflowClient, conn: connection, spec: ModelSpec, day: MonitoredDay, dag_run_id: str
) -> PerformanceCheck:
    """Realised performance of the day scored ``label_delay_days`` before ``day``, once its labels landed.

    Returns a check with ``skipped`` set when the labels have not landed or that day was never scored.

    Raises:
        DataValidationError: too few labelled rows, or a single class (see :func:`realised_performance`).
    """
    from include.nightshift.monitoring.days import read_day_scores
    from include.nightshift.registry import holdout_metrics
    from include.nightshift.warehouse import Tables

    labelled = day.labelled_date
    if not storage.exists(day.labels_uri):
        return PerformanceCheck(labelled, skipped=f"no labels at {day.labels_uri}")
    scores = read_day_scores(conn, Tables.for_spec(spec), labelled)
    if scores.empty:
        return PerformanceCheck(labelled, skipped="no published scores")
    labels = storage.read_parquet(day.labels_uri, columns=[spec.entity_key, spec.target.name])
    realised = realised_performance(spec, scores, labels)
    version = int(scores["model_version"].iloc[0])
    run_id = client.get_model_version(spec.name, str(version)).run_id
    holdout = holdout_metrics(client, run_id) if run_id else {}
    reasons = decay_reasons(spec, realised, holdout)
    row = PerformanceRow(
        model=spec.name,
        score_date=labelled,
        model_version=version,
        labelled_rows=int(realised["labelled_rows"]),
        **{k: realised[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "brier", "calibration_error")},
        mean_score=realised["mean_score"],
        positive_rate=realised["positive_rate"],
        holdout_roc_auc=holdout.get("roc_auc"),
        decayed=bool(reasons),
        reasons=reasons,
        dag_run_id=dag_run_id,
    )
    write_performance(conn, row)
    return PerformanceCheck(labelled, row=row)
