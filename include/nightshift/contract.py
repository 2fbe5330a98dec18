"""A model version's contract: what it needs as input and what it predicts, recorded at training.

Scoring and monitoring read the contract of the version they use, not today's spec file: editing a
spec changes what the *next* training run does, while the champion keeps scoring with its own
features, expressions, target and threshold. The contract is ``contract.json`` in the version's
MLflow run.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from pydantic import Field

from include.nightshift.errors import DataValidationError
from include.nightshift.spec.names import Frozen
from include.nightshift.spec.sections import Feature, Target

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

CONTRACT_ARTIFACT = "contract.json"


class ContractError(DataValidationError):
    """The data no longer holds what a model version needs: retrying cannot fix it."""


class ModelContract(Frozen):
    """The features (with their types, rules and expressions), the target and the decision threshold."""

    schema_version: int = 1
    entity_key: str
    features: tuple[Feature, ...] = Field(min_length=1)
    target: Target
    decision_threshold: float

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelContract:
        return cls(
            entity_key=spec.entity_key,
            features=spec.features,
            target=spec.target,
            decision_threshold=spec.training.decision_threshold,
        )

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.features if not f.derived]

    def apply(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` as the version saw it: its features, target and threshold in place of today's.

        When today's spec declares another target type, its metric rules (gate, floors, decay) belong to
        that type and are left out.
        """
        from include.nightshift.spec import validate_spec

        raw = spec.model_dump(by_alias=True)
        raw["features"] = [f.model_dump() for f in self.features]
        raw["target"] = {**raw["target"], **self.target.model_dump()}
        raw["training"]["decision_threshold"] = self.decision_threshold
        categories = {f.name for f in self.features if f.type == "category"}
        # A slice of today's spec that the version did not have is not monitored for it.
        raw["monitoring"]["slices"] = [name for name in raw["monitoring"]["slices"] if name in categories]
        if self.target.type != spec.target.type:
            raw["gate"] = {}
            raw["monitoring"]["performance_floors"] = {}
            raw["monitoring"]["max_decay"] = {}
            raw["training"].update(algorithm="hist_gradient_boosting", hyperparameters={})
        return validate_spec(raw)

    def check_columns(self, model: str, version: int, uri: str, columns: list[str]) -> None:
        """The day's file holds every input column the version needs.

        Raises:
            ContractError: naming the version, the missing columns and the two ways out.
        """
        missing = [c for c in self.input_names if c not in columns]
        if missing:
            raise ContractError(
                f"{uri} has no column(s) {', '.join(missing)}, which {model} version {version} (the version "
                f"being used) needs as input. Either retrain {model} on data without them (trigger "
                f"{model}_training; the spec's features decide what the next version needs), or restore the "
                "column(s) in the landing data and re-run the date. Nothing was scored."
            )


def load_contract(client: MlflowClient, run_id: str | None, spec: ModelSpec) -> ModelContract:
    """The contract saved with the run that trained a version; today's spec for versions older than contracts."""
    import tempfile

    from mlflow.exceptions import MlflowException

    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run_id, CONTRACT_ARTIFACT, tmp)
            except (MlflowException, OSError):
                path = None
            if path:
                with open(path) as f:
                    return ModelContract.model_validate(json.load(f))
    log.warning(
        "MLflow run %s of %s has no %s: using today's spec as its contract", run_id, spec.name, CONTRACT_ARTIFACT
    )
    return ModelContract.of(spec)
