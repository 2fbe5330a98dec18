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
from include.nightshift.metrics import calibration_error
from include.nightshift.pg import insert_row

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    from mlflow import MlflowClient
    from psycopg2.extensions import connection

    from include.nightshift.monitoring.days import MonitoredDay
    from include.nightshift.monitoring.slices import SlicePerformance
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)


def _proba(spec: ModelSpec, class_scores: pd.Series) -> Any:
    """The (n, k) class probabilities of ``class_scores`` ({class: probability} per row), in classes order."""
    import numpy as np

    classes = spec.target.classes or ()
    return np.array([[float((row or {}).get(c, 0.0)) for c in classes] for row in class_scores], dtype=float)


def realised_performance(spec: ModelSpec, scores: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """Metrics of one day's published scores against the labels that arrived for that day.

    Args:
        scores: The day's rows of ``<model>_scores`` (entity key and the outputs of the model's type:
            ``score``; ``predicted_class``, ``score``, ``class_scores``; or ``prediction``).
        labels: The day's labels (entity key, target).

    Raises:
        DataValidationError: Fewer than ``monitoring.min_labelled_rows`` scored rows have a label,
            or a binary model's labels hold a single class.
    """
    key, target = spec.entity_key, spec.target.name
    joined = scores.merge(labels[[key, target]].dropna(), on=key, how="inner")
    need = spec.monitoring.min_labelled_rows
    if len(joined) < need:
        raise DataValidationError(
            f"only {len(joined)} scored rows have a label (monitoring.min_labelled_rows is {need})"
        )
    return joined_metrics(spec, joined)


def joined_metrics(spec: ModelSpec, joined: pd.DataFrame) -> dict[str, float]:
    """The realised metrics of scored rows that carry their label (the target column).

    Raises:
        DataValidationError: a binary model's labels hold a single class.
    """
    from include.nightshift.datasets import target_values
    from include.nightshift.metrics import evaluate_binary, evaluate_multiclass, evaluate_regression

    target, kind = spec.target.name, spec.target.type
    y = target_values(spec, joined[target])
    if kind == "regression":
        metrics = evaluate_regression(y, joined["prediction"])
        metrics["mean_prediction"] = float(joined["prediction"].mean())
    elif kind == "multiclass":
        metrics = evaluate_multiclass(y, _proba(spec, joined["class_scores"]), tuple(spec.target.classes or ()))
        metrics["mean_score"] = float(joined["score"].mean())
    else:
        if y.nunique() < 2:
            raise DataValidationError(f"labels column {target!r} holds one class only ({y.iloc[0]!r})")
        metrics = evaluate_binary(y, joined["score"], spec.training.decision_threshold)
        metrics["calibration_error"] = calibration_error(y, joined["score"])
        metrics["mean_score"] = float(joined["score"].mean())
    metrics["labelled_rows"] = float(len(joined))
    return metrics


def decay_reasons(
    spec: ModelSpec, realised: dict[str, float], champion_holdout: dict[str, float], where: str = ""
) -> list[str]:
    """Why realised performance asks for retraining: a floor broken, or too far below the holdout.

    Args:
        where: Put before each reason (a slice: ``"region=south (812 rows): "``).
    """
    from include.nightshift.spec import HIGHER_IS_BETTER

    reasons = []
    for metric, floor in spec.monitoring.performance_floors.items():
        value = realised.get(metric)
        if value is None:
            continue
        worse = value < floor if HIGHER_IS_BETTER[metric] else value > floor
        if worse:
            rule = ">=" if HIGHER_IS_BETTER[metric] else "<="
            reasons.append(
                f"{where}{metric} {value:.4f} breaks monitoring.performance_floors.{metric} ({rule} {floor})"
            )
    for metric, allowed in spec.monitoring.max_decay.items():
        value, base = realised.get(metric), champion_holdout.get(metric)
        if value is None or base is None:
            continue
        decay = base - value if HIGHER_IS_BETTER[metric] else value - base
        if decay > allowed:
            reasons.append(
                f"{where}{metric} {value:.4f} is {decay:.4f} worse than the model's holdout {base:.4f} "
                f"(monitoring.max_decay.{metric} is {allowed})"
            )
    return reasons


METRIC_COLUMNS = (
    "roc_auc",
    "pr_auc",
    "precision",
    "recall",
    "brier",
    "calibration_error",
    "mean_score",
    "positive_rate",
    "accuracy",
    "f1_macro",
    "log_loss",
    "mae",
    "rmse",
    "r2",
    "mape",
    "mean_prediction",
    "mean_target",
)


@dataclass(frozen=True)
class PerformanceRow:
    """One ``monitoring.performance`` row: a labelled day's realised metrics against the version's holdout.

    One column per metric (those of other target types stay NULL): analysts select the metric they
    chart by name, and the set of metrics is closed (the spec accepts only these names).
    """

    model: str
    score_date: date
    model_version: int
    target_type: str
    labelled_rows: int
    metrics: dict[str, float]
    holdout: dict[str, float]
    decayed: bool
    reasons: list[str] = field(default_factory=list)
    dag_run_id: str = ""
    report_uri: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name in METRIC_COLUMNS:
            return self.metrics.get(name)
        raise AttributeError(name)

    @property
    def holdout_roc_auc(self) -> float | None:
        return self.holdout.get("roc_auc")

    def as_row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k != "metrics"}
        row.update({m: self.metrics.get(m) for m in METRIC_COLUMNS})
        row["holdout_roc_auc"] = self.holdout_roc_auc
        return row


def write_performance(conn: connection, row: PerformanceRow) -> None:
    """Replace the day's realised-performance row for the model."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM monitoring.performance WHERE model = %s AND score_date = %s", (row.model, row.score_date)
        )
        insert_row(cur, "monitoring.performance", row.as_row())


@dataclass(frozen=True)
class PerformanceCheck:
    """The outcome of :func:`measure_day`: the row written, or why there was nothing to measure."""

    labelled_date: date
    row: PerformanceRow | None = None
    skipped: str | None = None
    slices: tuple[SlicePerformance, ...] = ()

    @property
    def slice_reasons(self) -> list[str]:
        return [reason for s in self.slices for reason in s.reasons]

    @property
    def reasons(self) -> list[str]:
        """Why to retrain: the day's own floors and decay, then each slice's."""
        return [*(self.row.reasons if self.row else []), *self.slice_reasons]


def measure_day(
    storage: Storage,
    client: MlflowClient,
    conn: connection,
    spec: ModelSpec,
    day: MonitoredDay,
    dag_run_id: str,
    reports_root: str | None = None,
) -> PerformanceCheck:
    """Realised performance of the day scored ``label_delay_days`` before ``day``, once its labels landed.

    The day is measured as the version that scored it understood it (its contract: type, classes,
    threshold). With ``reports_root``, Evidently's classification or regression report of the day goes
    there and into the version's MLflow run. Returns a check with ``skipped`` set when the labels have
    not landed or that day was never scored.

    Raises:
        DataValidationError: too few labelled rows, or a single class (see :func:`realised_performance`).
    """
    from include.nightshift.contract import load_contract
    from include.nightshift.monitoring.days import read_day_scores, scoring_version
    from include.nightshift.registry import holdout_metrics
    from include.nightshift.warehouse import Tables

    labelled = day.labelled_date
    if not storage.exists(day.labels_uri):
        return PerformanceCheck(labelled, skipped=f"no labels at {day.labels_uri}")
    version = scoring_version(conn, Tables.for_spec(spec), labelled)
    if version is None:
        return PerformanceCheck(labelled, skipped="no published scores")
    run_id = client.get_model_version(spec.name, str(version)).run_id
    vspec = load_contract(client, run_id, spec).apply(spec)
    scores = read_day_scores(conn, Tables.for_spec(vspec), labelled)
    labels = storage.read_parquet(day.labels_uri, columns=[vspec.entity_key, vspec.target.name])
    realised = realised_performance(vspec, scores, labels)
    holdout = holdout_metrics(client, run_id) if run_id else {}
    reasons = decay_reasons(vspec, realised, holdout)
    report_uri = None
    if reports_root and run_id:
        from include.nightshift.monitoring.reports import publish_performance_report

        report_uri = publish_performance_report(storage, client, vspec, scores, labels, reports_root, labelled, run_id)
    row = PerformanceRow(
        model=spec.name,
        score_date=labelled,
        model_version=version,
        target_type=vspec.target.type,
        labelled_rows=int(realised["labelled_rows"]),
        metrics={k: v for k, v in realised.items() if k in METRIC_COLUMNS},
        holdout={k: v for k, v in holdout.items() if k in vspec.metrics},
        decayed=bool(reasons),
        reasons=reasons,
        dag_run_id=dag_run_id,
        report_uri=report_uri,
    )
    write_performance(conn, row)
    slices = measure_slices(storage, conn, vspec, day, scores, labels, holdout, dag_run_id)
    return PerformanceCheck(labelled, row=row, slices=tuple(slices))


def measure_slices(
    storage: Storage,
    conn: connection,
    spec: ModelSpec,
    day: MonitoredDay,
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    holdout: dict[str, float],
    dag_run_id: str,
) -> list[SlicePerformance]:
    """The labelled day's realised metrics per slice value into ``monitoring.slice_performance``.

    Nothing when the spec declares no slices. The slice values come from the labelled day's features.
    """
    from include.nightshift.monitoring import slices

    if not spec.monitoring.slices:
        return []
    key, target = spec.entity_key, spec.target.name
    features = storage.read_parquet(day.labelled_input_uri, columns=[key, *spec.input_names])
    joined = scores.merge(labels[[key, target]].dropna(), on=key).merge(
        slices.read_slice_features(spec, features), on=key
    )
    rows = slices.slice_performance(spec, joined, holdout)
    version = int(scores["model_version"].iloc[0]) if len(scores) else day.model_version
    slices.write_slice_performance(conn, spec.name, day.labelled_date, version, rows, dag_run_id)
    return rows
