"""Hyperparameter search: seeded trial parameter sets, one trial's fit and score, and the best trial.

A trial fits the pipeline on the training part of the window minus its last ``validation_days`` days
and scores it on those days (a time-based split inside the training part): the holdout the gate
compares the challenger and the champion on is never seen by the search. Each trial is recorded as an
MLflow child run (tag ``mlflow.parentRunId``) of the training run, which :func:`start_training_run`
opens before the trials and the final fit continues.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.spec.metrics import HIGHER_IS_BETTER
from include.nightshift.spec.search import Choices, Search

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

DATE_COLUMN = "feature_date"
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class TrialResult:
    """What one trial measured: its parameters and the metric on the validation days."""

    index: int
    params: dict[str, Any]
    metric: str
    value: float
    fit_rows: int
    validation_rows: int
    fit_seconds: float
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        return cls(**d)


def sample_trials(search: Search) -> list[dict[str, Any]]:
    """``search.n_trials`` parameter sets drawn with ``search.seed``: the same spec gives the same sets.

    Names are drawn in sorted order, so reordering the space in the YAML does not change the draws.
    """
    rng = random.Random(search.seed)
    trials = []
    for _ in range(search.n_trials):
        params: dict[str, Any] = {}
        for name in sorted(search.space):
            dim = search.space[name]
            if isinstance(dim, Choices):
                params[name] = dim.choices[rng.randrange(len(dim.choices))]
                continue
            lo, hi = (math.log(dim.low), math.log(dim.high)) if dim.log else (dim.low, dim.high)
            x = rng.uniform(lo, hi)
            value = math.exp(x) if dim.log else x
            params[name] = min(max(round(value), int(dim.low)), int(dim.high)) if dim.type == "int" else value
        trials.append(params)
    return trials


def validation_split(spec: ModelSpec, train: pd.DataFrame, validation_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training part split by time: (rows to fit on, the last ``validation_days`` days).

    Raises:
        DataValidationError: one of the parts is empty or lacks a class it needs.
    """
    import pandas as pd

    days = pd.to_datetime(train[DATE_COLUMN])
    first_validation_day = days.max().normalize() - timedelta(days=validation_days - 1)
    later = days >= first_validation_day
    fit, validation = train[~later].reset_index(drop=True), train[later].reset_index(drop=True)
    for name, part in (("fit", fit), ("validation", validation)):
        if part.empty or (spec.target.type != "regression" and part[spec.target.name].nunique() < 2):
            raise DataValidationError(
                f"search of {spec.name}: the {name} part of the training set (validation from "
                f"{first_validation_day.date()}, training.search.validation_days {validation_days}) has "
                f"{len(part)} rows and {part[spec.target.name].nunique() if len(part) else 0} target value(s); "
                "it needs rows of at least two classes"
            )
    return fit, validation


def run_trial(spec: ModelSpec, algorithm: str, index: int, params: dict[str, Any], train: pd.DataFrame) -> TrialResult:
    """Fit ``params`` (over the spec's hyperparameters) on the training part minus the validation days
    and measure on those days.

    Raises:
        DataValidationError: the split leaves a part empty or with one class.
    """
    from include.nightshift.features import model_input
    from include.nightshift.pipeline import build_pipeline
    from include.nightshift.training import measure

    search = _search_of(spec)
    fit, validation = validation_split(spec, train, search.validation_days)
    pipeline = build_pipeline(spec, algorithm, {**spec.hyperparameters(algorithm), **params})
    started = time.monotonic()
    pipeline.fit(model_input(spec, fit), fit[spec.target.name])
    seconds = time.monotonic() - started
    metrics = measure(spec, pipeline, validation)
    metric = search.metric_for(spec.headline_metric)
    result = TrialResult(
        index, params, metric, float(metrics[metric]), len(fit), len(validation), seconds, None, metrics
    )
    log.info("trial %d of %s: %s %.4f with %s (fit %.1f s)", index, spec.name, metric, result.value, params, seconds)
    return result


def best_trial(results: list[TrialResult]) -> TrialResult:
    """The trial with the best metric (lowest for metrics where lower is better); ties: the lowest index.

    A trial whose metric is not a number (e.g. NaN) never wins unless every trial's is.
    """
    if not results:
        raise ValueError("no trial results to choose from")
    higher = HIGHER_IS_BETTER[results[0].metric]

    def key(r: TrialResult) -> tuple[bool, float, int]:
        bad = math.isnan(r.value)
        return (bad, -r.value if higher else r.value, r.index)

    return min(results, key=key)


def start_training_run(client: MlflowClient, spec: ModelSpec, tags: dict[str, str]) -> tuple[str, str]:
    """Open the training run the trials are children of; the final fit continues it.

    Returns:
        The experiment id and the run id.
    """
    from include.nightshift.training import experiment_name

    name = experiment_name(spec)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, tags=tags, run_name=f"{spec.name}-training")
    return str(experiment_id), str(run.info.run_id)


def log_trial(client: MlflowClient, experiment_id: str, parent_run_id: str, result: TrialResult) -> str:
    """Record a trial as a finished child run of the training run; returns the child's id."""
    from mlflow.entities import Metric, Param, RunTag

    tags = {PARENT_TAG: parent_run_id, "nightshift.trial": str(result.index)}
    run = client.create_run(experiment_id, tags=tags, run_name=f"trial-{result.index}")
    now = int(time.time() * 1000)
    values = {**{f"validation_{k}": v for k, v in result.metrics.items()}, "fit_seconds": result.fit_seconds}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in values.items() if not math.isnan(float(v))],
        params=[Param(k, str(v)) for k, v in result.params.items()]
        + [Param("fit_rows", str(result.fit_rows)), Param("validation_rows", str(result.validation_rows))],
        tags=[RunTag("nightshift.trial_metric", result.metric)],
    )
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def summary(spec: ModelSpec, results: list[TrialResult]) -> dict[str, Any]:
    """What the training run records about its search: the space, every trial, the best one."""
    best = best_trial(results)
    search = _search_of(spec)
    return {
        "space": search.describe(),
        "metric": best.metric,
        "higher_is_better": HIGHER_IS_BETTER[best.metric],
        "best": {"index": best.index, "params": best.params, "value": best.value, "run_id": best.run_id},
        "trials": [r.as_dict() for r in sorted(results, key=lambda r: r.index)],
    }


def _search_of(spec: ModelSpec) -> Search:
    if spec.training.search is None:
        raise ValueError(f"model {spec.name} has no training.search")
    return spec.training.search
