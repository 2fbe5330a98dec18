"""The gate's evidence: the challenger and the champion scored on the same holdout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.registry import CHAMPION, TAG, get_alias

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from include.nightshift.spec import ModelSpec


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics of the challenger and of the champion (None when there is none yet)."""

    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: int | None


def predict_scores(model_uri: str, spec: ModelSpec, df: pd.DataFrame) -> Any:
    """Positive-class probabilities of the model at ``model_uri`` for the rows of ``df``."""
    import mlflow

    from include.nightshift.training import model_input

    model = mlflow.sklearn.load_model(model_uri)
    return model.predict_proba(model_input(spec, df))[:, 1]


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
    return Evaluation(challenger, champion, int(champion_mv.version) if champion_mv else None)
