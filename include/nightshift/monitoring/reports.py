"""Evidently's model-quality report of a labelled day, with the data definition of the model's type
(classification for binary and multiclass models, regression for regression ones)."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any

from include.nightshift.storage import join_uri

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    from mlflow import MlflowClient

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)

REPORT_NAME = "performance_report.html"
TRUTH, PREDICTED, PROBABILITY = "__target", "__predicted", "__probability"


def quality_frame(spec: ModelSpec, scores: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """The day's labelled rows as Evidently reads them, and the matching data definition."""
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression

    from include.nightshift.datasets import target_values

    key, target = spec.entity_key, spec.target.name
    joined = scores.merge(labels[[key, target]].dropna(), on=key, how="inner")
    frame = joined[[key]].copy()
    frame[TRUTH] = target_values(spec, joined[target]).to_numpy()
    kind = spec.target.type
    if kind == "regression":
        frame[PREDICTED] = joined["prediction"].astype(float).to_numpy()
        definition = DataDefinition(
            numerical_columns=[TRUTH, PREDICTED], regression=[Regression(target=TRUTH, prediction=PREDICTED)]
        )
        return frame, definition
    if kind == "binary":
        frame[PROBABILITY] = joined["score"].astype(float).to_numpy()
        definition = DataDefinition(
            numerical_columns=[PROBABILITY],
            categorical_columns=[TRUTH],
            classification=[BinaryClassification(target=TRUTH, prediction_probas=PROBABILITY, pos_label=1)],
        )
        return frame, definition
    classes = list(spec.target.classes or ())
    frame[PREDICTED] = joined["predicted_class"].astype(str).to_numpy()
    for c in classes:
        frame[c] = [float((row or {}).get(c, 0.0)) for row in joined["class_scores"]]
    definition = DataDefinition(
        numerical_columns=classes,
        categorical_columns=[TRUTH, PREDICTED],
        classification=[MulticlassClassification(target=TRUTH, prediction_labels=PREDICTED, prediction_probas=classes)],
    )
    return frame, definition


def performance_report_html(spec: ModelSpec, scores: pd.DataFrame, labels: pd.DataFrame) -> str:
    """Evidently's classification or regression preset on the day's labelled rows, as HTML."""
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    frame, definition = quality_frame(spec, scores, labels)
    preset = RegressionPreset() if spec.target.type == "regression" else ClassificationPreset()
    snapshot = Report([preset]).run(Dataset.from_pandas(frame, data_definition=definition), None)
    return snapshot.get_html_str(as_iframe=False)


def publish_performance_report(
    storage: Storage,
    client: MlflowClient,
    spec: ModelSpec,
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    reports_root: str,
    day: date,
    run_id: str,
) -> str | None:
    """Write the report under the reports root and into the version's MLflow run; its URI (None if Evidently fails).

    The recorded metrics do not depend on this report (they are computed like the holdout's), so a report
    Evidently cannot build is logged and the day is still measured.
    """
    from include.nightshift.registry import log_report

    try:
        html = performance_report_html(spec, scores, labels)
    except Exception as exc:  # a third-party report must not cost the day its metrics
        log.warning("Evidently could not build the performance report of %s %s: %s", spec.name, day, exc)
        return None
    uri = join_uri(reports_root, spec.name, "performance", f"date={day.isoformat()}", REPORT_NAME)
    storage.write_bytes(html.encode(), uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, REPORT_NAME)
        with open(local, "w") as f:
            f.write(html)
        log_report(client, run_id, local, f"monitoring/performance/{day.isoformat()}")
    return uri
