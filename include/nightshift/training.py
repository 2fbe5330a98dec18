"""Training: the scikit-learn pipeline (preprocessing inside it), the metrics the gate compares, and the
training run in MLflow (parameters, metrics, the model, its data window and a monitoring reference).

Functions receive an ``MlflowClient`` (built by the Airflow hook from a connection) and never read
configuration themselves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.registry import REFERENCE_ARTIFACT, TAG

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    from include.nightshift.datasets import TrainingSet, Window
    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

# skops (MLflow's safe default format) refuses these types unless told to trust them. They are
# scikit-learn's own tree and dtype objects, written only by our training task into our registry.
SKOPS_TRUSTED_TYPES = ("numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor")


def build_pipeline(spec: ModelSpec, algorithm: str) -> Pipeline:
    """An unfitted pipeline: impute, scale and one-hot encode, then the classifier.

    Args:
        spec: The model (feature types, hyperparameters, seed).
        algorithm: One of ``spec.ALGORITHMS``.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    params: dict[str, Any] = spec.hyperparameters(algorithm)
    seed = spec.training.random_seed
    classifiers = {
        "logistic_regression": lambda: LogisticRegression(class_weight="balanced", random_state=seed, **params),
        "random_forest": lambda: RandomForestClassifier(class_weight="balanced", random_state=seed, n_jobs=1, **params),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(random_state=seed, **params),
    }
    if algorithm not in classifiers:
        raise ValueError(f"algorithm {algorithm!r} is not one of {sorted(classifiers)}")
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer(
        [("num", numeric, spec.numeric_features), ("cat", categorical, spec.categorical_features)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", pre), ("classifier", classifiers[algorithm]())])


def model_input(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The feature columns in spec order, with dtypes the model signature expects.

    Integers become float64 so that a missing value in tomorrow's data does not break the schema;
    categories are plain strings (object) with None for missing.
    """
    out = df[spec.feature_names].copy()
    for f in spec.features:
        if f.type in ("int", "float"):
            out[f.name] = out[f.name].astype("float64")
        else:
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
    return out


def evaluate(y_true: Any, scores: Any, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score, and precision / recall / F1 at ``threshold``."""
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y_true).astype(int)
    s = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    pred = (s >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "log_loss": float(log_loss(y, s, labels=[0, 1])),
        "brier": float(brier_score_loss(y, s)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def experiment_name(spec: ModelSpec) -> str:
    return f"nightshift-{spec.name}"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    model_id: str
    experiment_id: str
    metrics: dict[str, float]


def _fit_and_measure(spec: ModelSpec, pipeline: Pipeline, ts: TrainingSet) -> tuple[pd.DataFrame, dict[str, float]]:
    """Fit on the training part; training and holdout metrics (``train_*``, ``holdout_*``, ``fit_seconds``)."""
    x_train, y_train = model_input(spec, ts.train), ts.train[spec.target.name]
    x_hold, y_hold = model_input(spec, ts.holdout), ts.holdout[spec.target.name]
    threshold = spec.training.decision_threshold
    started = time.monotonic()
    pipeline.fit(x_train, y_train)
    fit_seconds = time.monotonic() - started
    metrics = {f"train_{k}": v for k, v in evaluate(y_train, pipeline.predict_proba(x_train)[:, 1], threshold).items()}
    metrics.update(
        {f"holdout_{k}": v for k, v in evaluate(y_hold, pipeline.predict_proba(x_hold)[:, 1], threshold).items()}
    )
    metrics["fit_seconds"] = fit_seconds
    return x_train, metrics


def _log_params_and_data(spec: ModelSpec, ts: TrainingSet, window: Window, algorithm: str) -> None:
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
            **{f"hp_{k}": v for k, v in spec.hyperparameters(algorithm).items()},
        }
    )
    mlflow.log_input(
        from_pandas(ts.train, name=f"{spec.name}_training_set", targets=spec.target.name),
        context="training",
        tags={"window": f"{window.start}..{window.end}", "content_hash": ts.content_hash},
    )
    mlflow.log_dict(window.as_dict(), "data/window.json")


def _log_model(pipeline: Pipeline, x_train: pd.DataFrame) -> Any:
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(x_train.head(200), pipeline.predict_proba(x_train.head(200))[:, 1])
    return mlflow.sklearn.log_model(
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

    mlflow.set_tracking_uri(client.tracking_uri)
    experiment = mlflow.set_experiment(experiment_name(spec))
    pipeline = build_pipeline(spec, algorithm)
    tags = {f"{TAG}.model": spec.name, f"{TAG}.algorithm": algorithm, f"{TAG}.data_hash": ts.content_hash, **run_tags}
    with mlflow.start_run(experiment_id=experiment.experiment_id, tags=tags) as run:
        x_train, metrics = _fit_and_measure(spec, pipeline, ts)
        _log_params_and_data(spec, ts, window, algorithm)
        mlflow.log_metrics(metrics)
        for name, payload in (artifacts or {}).items():
            mlflow.log_dict(payload, f"validation/{name}.json")
        reference = ts.train.sample(
            n=min(len(ts.train), spec.training.reference_sample_rows), random_state=spec.training.random_seed
        )
        _log_frame(reference, REFERENCE_ARTIFACT)
        info = _log_model(pipeline, x_train)
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
