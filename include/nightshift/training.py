"""Training: the MLflow run that fits a model's pipeline (``pipeline.py``) and records everything about
it: parameters, metrics, the model, its contract, its data window and a monitoring reference.

Functions receive an ``MlflowClient`` (built by the Airflow hook from a connection) and never read
configuration themselves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.contract import CONTRACT_ARTIFACT, ModelContract
from include.nightshift.features import model_input
from include.nightshift.metrics import evaluate
from include.nightshift.pipeline import build_pipeline, predict_outputs
from include.nightshift.registry import REFERENCE_ARTIFACT, TAG

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    from include.nightshift.datasets import TrainingSet, Window
    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

# skops (MLflow's safe default format) refuses these types unless told to trust them. They are
# scikit-learn's own tree and dtype objects and our derivation step, written only by our training task
# into our registry.
SKOPS_TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "include.nightshift.features.DeriveFeatures",
)


def experiment_name(spec: ModelSpec) -> str:
    return f"nightshift-{spec.name}"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    model_id: str
    experiment_id: str
    metrics: dict[str, float]


def measure(spec: ModelSpec, model: Any, frame: pd.DataFrame, truth: pd.Series | None = None) -> dict[str, float]:
    """The metrics of the spec's type for a fitted model on ``frame`` (its features, and the target or ``truth``)."""
    outputs = predict_outputs(spec, model, model_input(spec, frame))
    t = spec.target
    y = frame[t.name] if truth is None else truth
    return evaluate(y, outputs, spec.training.decision_threshold, t.type, t.classes)


def _fit_and_measure(spec: ModelSpec, pipeline: Pipeline, ts: TrainingSet) -> tuple[pd.DataFrame, dict[str, float]]:
    """Fit on the training part; training and holdout metrics (``train_*``, ``holdout_*``, ``fit_seconds``)."""
    x_train = model_input(spec, ts.train)
    started = time.monotonic()
    pipeline.fit(x_train, ts.train[spec.target.name])
    fit_seconds = time.monotonic() - started
    metrics = {f"train_{k}": v for k, v in measure(spec, pipeline, ts.train).items()}
    metrics.update({f"holdout_{k}": v for k, v in measure(spec, pipeline, ts.holdout).items()})
    metrics["fit_seconds"] = fit_seconds
    return x_train, metrics


def _log_params_and_data(
    spec: ModelSpec, ts: TrainingSet, window: Window, algorithm: str, params: dict[str, Any]
) -> None:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    mlflow.log_params(
        {
            "algorithm": algorithm,
            "decision_threshold": spec.training.decision_threshold,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "holdout_start": window.holdout_start.isoformat(),
            "data_hash": ts.content_hash,
            "train_rows": len(ts.train),
            "holdout_rows": len(ts.holdout),
            **{f"hp_{k}": v for k, v in params.items()},
        }
    )
    mlflow.log_input(
        from_pandas(ts.train, name=f"{spec.name}_training_set", targets=spec.target.name),
        context="training",
        tags={"window": f"{window.start}..{window.end}", "content_hash": ts.content_hash},
    )
    mlflow.log_dict(window.as_dict(), "data/window.json")


def _trusted_types(pipeline: Pipeline) -> list[str]:
    """The types skops must be told to trust to load ``pipeline``: ours, and whatever else it holds.

    Only our training task writes models into our registry, so what it saved is what it trusts: a
    dotted-path estimator brings types of its own (e.g. its trees).
    """
    import skops.io as sio

    return sorted(set(SKOPS_TRUSTED_TYPES) | set(sio.get_untrusted_types(data=sio.dumps(pipeline))))


def _log_model(spec: ModelSpec, pipeline: Pipeline, x_train: pd.DataFrame) -> Any:
    import mlflow
    from mlflow.models import infer_signature

    sample = x_train.head(200)
    signature = infer_signature(sample, predict_outputs(spec, pipeline, sample))
    return mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=signature,
        input_example=x_train.head(5),
        pyfunc_predict_fn="predict" if spec.target.type == "regression" else "predict_proba",
        serialization_format="skops",
        skops_trusted_types=_trusted_types(pipeline),
        # Stated, not inferred: inference re-imports the model in a subprocess (~6 s a run).
        pip_requirements=model_requirements(),
    )


def train_and_log(
    client: MlflowClient,
    spec: ModelSpec,
    ts: TrainingSet,
    window: Window,
    algorithm: str,
    run_tags: dict[str, str],
    artifacts: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Fit the pipeline and record everything in one MLflow run.

    Logs the hyperparameters, training and holdout metrics, the model with its signature and an
    input example, the data window and content hash, a reference sample for drift monitoring, and
    ``artifacts`` (dicts, e.g. the GX validation results) as JSON.

    Args:
        search: A finished hyperparameter search (:func:`include.nightshift.search.summary`): its best
            parameters override the spec's, and the space, the trials and the best are logged.
        run_id: Continue this (already open) run, the parent of the search's trials, instead of a new one.
    """
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    experiment = mlflow.set_experiment(experiment_name(spec))
    params = {**spec.hyperparameters(algorithm), **(search["best"]["params"] if search else {})}
    pipeline = build_pipeline(spec, algorithm, params)
    tags = {f"{TAG}.model": spec.name, f"{TAG}.algorithm": algorithm, f"{TAG}.data_hash": ts.content_hash, **run_tags}
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment.experiment_id, tags=tags) as run:
        mlflow.set_tags(tags)
        x_train, metrics = _fit_and_measure(spec, pipeline, ts)
        _log_params_and_data(spec, ts, window, algorithm, params)
        if search:
            _log_search(search)
        mlflow.log_metrics(metrics)
        for name, payload in (artifacts or {}).items():
            mlflow.log_dict(payload, f"validation/{name}.json")
        reference = ts.train.sample(
            n=min(len(ts.train), spec.training.reference_sample_rows), random_state=spec.training.random_seed
        )
        _log_frame(reference, REFERENCE_ARTIFACT)
        mlflow.log_dict(ModelContract.of(spec).model_dump(mode="json"), CONTRACT_ARTIFACT)
        info = _log_model(spec, pipeline, x_train)
    headline = spec.headline_metric
    log.info(
        "trained %s (%s) in MLflow run %s: holdout %s %.4f",
        spec.name,
        algorithm,
        run.info.run_id,
        headline,
        metrics[f"holdout_{headline}"],
    )
    return TrainResult(run.info.run_id, info.model_uri, info.model_id, experiment.experiment_id, metrics)


def _log_search(search: dict[str, Any]) -> None:
    """The search on the training run: the space and every trial as JSON, the best trial's metric and index."""
    import mlflow

    mlflow.log_dict(search, "search/search.json")
    mlflow.log_dict({"trials": search["trials"]}, "search/trials.json")
    mlflow.log_metric(f"search_best_validation_{search['metric']}", search["best"]["value"])
    mlflow.set_tags(
        {f"{TAG}.search_trials": str(len(search["trials"])), f"{TAG}.search_best_trial": str(search["best"]["index"])}
    )


def model_requirements() -> list[str]:
    """Pinned requirements of the logged pipeline, from the versions installed here."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "skops", "pandas", "numpy", "scipy")]


def _log_frame(df: pd.DataFrame, artifact_file: str) -> None:
    import os
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(artifact_file))
        df.to_parquet(path, index=False)
        mlflow.log_artifact(path, artifact_path=os.path.dirname(artifact_file))


__all__ = ["build_pipeline", "evaluate", "measure", "model_input", "train_and_log"]
