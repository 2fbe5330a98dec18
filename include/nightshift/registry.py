"""The MLflow model registry: versions, the gate's record, the aliases, and what a version carries.

Functions receive an ``MlflowClient`` (built by the Airflow hook from a connection) and never read
configuration themselves. Aliases, not stages: ``challenger`` is the newest registered version,
``champion`` is what scoring uses.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from include.nightshift.errors import NoChampionError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from include.nightshift.evaluation import Evaluation
    from include.nightshift.gate import GateDecision
    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "nightshift"
# How time stamps in our registry tags are written (UTC), e.g. nightshift.promoted_at.
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
REFERENCE_ARTIFACT = "reference/reference.parquet"

# A model version is an ``int`` in our code, XCom and the warehouse's scores and monitoring tables;
# MLflow's API, its tags and the promotion log keep its string form ("3"). Convert at this boundary.


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


def register(
    client: MlflowClient,
    spec: ModelSpec,
    model_uri: str,
    model_id: str,
    run_id: str,
    tags: dict[str, str],
    timeout: float = 120.0,
    set_challenger: bool = True,
) -> ModelVersion:
    """Register the logged model as a new version of ``spec.name`` with the ``challenger`` alias.

    With ``set_challenger`` False (``promotion.mode: shadow``) the alias stays where it is: there it
    names the version in shadow, and only a version that passed the gate enters shadow.
    """
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
    if set_challenger:
        client.set_registered_model_alias(spec.name, CHALLENGER, mv.version)
    return mv


def record_decision(
    client: MlflowClient,
    spec: ModelSpec,
    version: int,
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
        f"{TAG}.compared_with_version": str(evaluation.champion_version or "none"),
        **extra,
    }
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
        client.set_model_version_tag(spec.name, str(version), k, v)


def promote(client: MlflowClient, spec: ModelSpec, version: int, tags: dict[str, str]) -> int | None:
    """Move ``@champion`` to ``version``; returns the version that held it before (or None)."""
    previous = get_alias(client, spec.name, CHAMPION)
    prev_version = int(previous.version) if previous else None
    stamp = {
        f"{TAG}.promoted_at": time.strftime(STAMP_FORMAT, time.gmtime()),
        f"{TAG}.previous_champion": str(prev_version or "none"),
        **tags,
    }
    for k, v in stamp.items():
        client.set_model_version_tag(spec.name, str(version), k, v)
    client.set_registered_model_alias(spec.name, CHAMPION, str(version))
    log.info("@%s of %s moved from version %s to %s", CHAMPION, spec.name, prev_version, version)
    return prev_version


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
