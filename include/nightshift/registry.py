"""MLflow: the training run, the model registry and its aliases.

Functions receive an ``MlflowClient`` (built by the Airflow hook from a connection) and never read
configuration themselves. Aliases, not stages: ``challenger`` is the newest registered version,
``champion`` is what scoring uses.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import NoChampionError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from include.nightshift.datasets import TrainingSet, Window
    from include.nightshift.gate import GateDecision
    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "nightshift"
# How time stamps in our registry tags are written (UTC), e.g. nightshift.promoted_at.
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# skops (MLflow's safe default format) refuses these types unless told to trust them. They are
# scikit-learn's own tree and dtype objects, written only by our training task into our registry.
SKOPS_TRUSTED_TYPES = ("numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor")


def experiment_name(spec: ModelSpec) -> str:
    return f"nightshift-{spec.name}"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    model_id: str
    experiment_id: str
    metrics: dict[str, float]


def train_and_log(
    client: MlflowClient,
    spec: ModelSpec,
    ts: TrainingSet,
    window: Window,
    algorithm: str,
    run_tags: dict[str, str],
    artifacts: dict[str, Any] | None = None,
) -> TrainResult:
    """Fit the pipeline and record everything in one MLflow run.

    Logs the hyperparameters, training and holdout metrics, the model with its signature and an
    input example, the data window and content hash, a reference sample for drift monitoring, and
    ``artifacts`` (dicts, e.g. the GX validation results) as JSON.
    """
    import mlflow
    from mlflow.models import infer_signature

    from include.nightshift.training import build_pipeline, evaluate, model_input

    mlflow.set_tracking_uri(client.tracking_uri)
    experiment = mlflow.set_experiment(experiment_name(spec))
    x_train, y_train = model_input(spec, ts.train), ts.train[spec.target.name]
    x_hold, y_hold = model_input(spec, ts.holdout), ts.holdout[spec.target.name]
    pipeline = build_pipeline(spec, algorithm)
    threshold = spec.training.decision_threshold
    tags = {f"{TAG}.model": spec.name, f"{TAG}.algorithm": algorithm, f"{TAG}.data_hash": ts.content_hash, **run_tags}
    with mlflow.start_run(experiment_id=experiment.experiment_id, tags=tags) as run:
        started = time.monotonic()
        pipeline.fit(x_train, y_train)
        fit_seconds = time.monotonic() - started
        train_scores = pipeline.predict_proba(x_train)[:, 1]
        hold_scores = pipeline.predict_proba(x_hold)[:, 1]
        metrics = {f"train_{k}": v for k, v in evaluate(y_train, train_scores, threshold).items()}
        metrics.update({f"holdout_{k}": v for k, v in evaluate(y_hold, hold_scores, threshold).items()})
        metrics["fit_seconds"] = fit_seconds
        mlflow.log_params(
            {
                "algorithm": algorithm,
                "decision_threshold": threshold,
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "holdout_start": window.holdout_start.isoformat(),
                "data_hash": ts.content_hash,
                "train_rows": len(ts.train),
                "holdout_rows": len(ts.holdout),
                **{f"hp_{k}": v for k, v in spec.hyperparameters(algorithm).items()},
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_input(
            mlflow.data.from_pandas(ts.train, name=f"{spec.name}_training_set", targets=spec.target.name),
            context="training",
            tags={"window": f"{window.start}..{window.end}", "content_hash": ts.content_hash},
        )
        mlflow.log_dict(window.as_dict(), "data/window.json")
        for name, payload in (artifacts or {}).items():
            mlflow.log_dict(payload, f"validation/{name}.json")
        reference = ts.train.sample(
            n=min(len(ts.train), spec.training.reference_sample_rows), random_state=spec.training.random_seed
        )
        _log_frame(reference, "reference/reference.parquet")
        signature = infer_signature(x_train.head(200), pipeline.predict_proba(x_train.head(200))[:, 1])
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=x_train.head(5),
            pyfunc_predict_fn="predict_proba",
            serialization_format="skops",
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            # Stated, not inferred: inference re-imports the model in a subprocess (~6 s a run).
            pip_requirements=model_requirements(),
        )
    log.info(
        "trained %s (%s) in MLflow run %s: holdout roc_auc %.4f",
        spec.name,
        algorithm,
        run.info.run_id,
        metrics["holdout_roc_auc"],
    )
    return TrainResult(run.info.run_id, info.model_uri, info.model_id, experiment.experiment_id, metrics)


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


def get_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def require_champion(client: MlflowClient, name: str) -> ModelVersion:
    mv = get_alias(client, name, CHAMPION)
    if mv is None:
        raise NoChampionError(
            f"no @champion for model {name}: train and promote a version first "
            f"(trigger {name}_training), or roll back to an existing version"
        )
    return mv


def predict_scores(model_uri: str, spec: ModelSpec, df: pd.DataFrame) -> Any:
    """Positive-class probabilities of the model at ``model_uri`` for the rows of ``df``."""
    import mlflow

    from include.nightshift.training import model_input

    model = mlflow.sklearn.load_model(model_uri)
    return model.predict_proba(model_input(spec, df))[:, 1]


@dataclass(frozen=True)
class Evaluation:
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None


def evaluate_against_champion(
    client: MlflowClient, spec: ModelSpec, model_uri: str, run_id: str, holdout: pd.DataFrame
) -> Evaluation:
    """Score the same holdout with the challenger and the current champion; log both to the run."""
    import mlflow

    from include.nightshift.training import evaluate

    mlflow.set_tracking_uri(client.tracking_uri)
    y = holdout[spec.target.name]
    threshold = spec.training.decision_threshold
    challenger = evaluate(y, predict_scores(model_uri, spec, holdout), threshold)
    champion_mv = get_alias(client, spec.name, CHAMPION)
    champion = None
    if champion_mv is not None:
        # Pinned to the version just read: the comparison and its record name the same model.
        champion = evaluate(y, predict_scores(f"models:/{spec.name}/{champion_mv.version}", spec, holdout), threshold)
    for k, v in challenger.items():
        client.log_metric(run_id, f"gate_challenger_{k}", v)
    for k, v in (champion or {}).items():
        client.log_metric(run_id, f"gate_champion_{k}", v)
    if champion_mv is not None:
        client.set_tag(run_id, f"{TAG}.compared_with_version", champion_mv.version)
    return Evaluation(challenger, champion, champion_mv.version if champion_mv else None)


def register(
    client: MlflowClient,
    spec: ModelSpec,
    model_uri: str,
    model_id: str,
    run_id: str,
    tags: dict[str, str],
    timeout: float = 120.0,
) -> ModelVersion:
    """Register the logged model as a new version of ``spec.name`` with the ``challenger`` alias."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            spec.name, tags={f"{TAG}.owner": spec.owner}, description=spec.description or None
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(spec.name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    deadline = time.monotonic() + timeout
    while mv.status != "READY":
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RuntimeError(f"model version {spec.name}/{mv.version} is {mv.status}: {mv.status_message}")
        time.sleep(0.5)
        mv = client.get_model_version(spec.name, mv.version)
    client.set_registered_model_alias(spec.name, CHALLENGER, mv.version)
    return mv


def record_decision(
    client: MlflowClient,
    spec: ModelSpec,
    version: str,
    run_id: str,
    decision: GateDecision,
    evaluation: Evaluation,
    extra: dict[str, str],
) -> None:
    """Write the gate decision on the MLflow run and on the model version, one line each."""
    tags = {
        f"{TAG}.gate": decision.verdict,
        f"{TAG}.gate_summary": decision.summary()[:5000],
        f"{TAG}.gate_metrics": json.dumps(
            {"challenger": evaluation.challenger, "champion": evaluation.champion}, sort_keys=True
        )[:5000],
        f"{TAG}.gate_rules": json.dumps(spec.gate.model_dump(), sort_keys=True),
        f"{TAG}.compared_with_version": evaluation.champion_version or "none",
        **extra,
    }
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
        client.set_model_version_tag(spec.name, version, k, v)


def promote(client: MlflowClient, spec: ModelSpec, version: str, tags: dict[str, str]) -> str | None:
    """Move ``@champion`` to ``version``; returns the version that held it before (or None)."""
    previous = get_alias(client, spec.name, CHAMPION)
    prev_version = previous.version if previous else None
    stamp = {
        f"{TAG}.promoted_at": time.strftime(STAMP_FORMAT, time.gmtime()),
        f"{TAG}.previous_champion": prev_version or "none",
        **tags,
    }
    for k, v in stamp.items():
        client.set_model_version_tag(spec.name, version, k, v)
    client.set_registered_model_alias(spec.name, CHAMPION, version)
    log.info("@%s of %s moved from version %s to %s", CHAMPION, spec.name, prev_version, version)
    return prev_version


REFERENCE_ARTIFACT = "reference/reference.parquet"


def load_reference(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """The monitoring reference saved with a model version at training time (a sample of its training data)."""
    import tempfile

    import pandas as pd
    from mlflow.exceptions import MlflowException

    from include.nightshift.errors import DataValidationError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise DataValidationError(
                f"MLflow run {run_id} has no {REFERENCE_ARTIFACT} (the drift reference saved at training): {exc}"
            ) from exc
        return pd.read_parquet(path)


def holdout_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The holdout metrics a version was trained with (``holdout_<metric>`` in its run), by metric name."""
    metrics = client.get_run(run_id).data.metrics
    return {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}


def log_report(client: MlflowClient, run_id: str, local_path: str, artifact_path: str) -> None:
    """Attach a monitoring report to the run that trained the version being monitored."""
    client.log_artifact(run_id, local_path, artifact_path=artifact_path)
