"""The ``<model>_rollback`` DAG: move ``@champion`` back to a chosen earlier version (trigger only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Param

from nightshift_airflow.factory.common import apply_timeouts, champion_asset, model_dag
from nightshift_airflow.factory.docs import ROLLBACK_DOC
from nightshift_airflow.operators.promotion import RollbackChampionOperator

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from include.nightshift.spec import ModelSpec


def rollback_dag(spec: ModelSpec) -> DAG:
    """The ``<model>_rollback`` DAG: move ``@champion`` back to a chosen earlier version."""
    params = {
        # Nullable with no default, checked by the task: a required empty field disables the form's Trigger.
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Model version",
            description=f"The registered version of {spec.name} that becomes @champion again (see the MLflow "
            "registry or monitoring.promotions).",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            title="Reason",
            description="Why (at least 10 characters): recorded in the registry and in monitoring.promotions.",
        ),
    }
    doc = ROLLBACK_DOC.format(name=spec.name, owner=spec.owner)
    description = f"Move @champion of {spec.name} back to an earlier version"
    with model_dag(spec, "rollback", description, doc, params, max_active_runs=1, schedule=None) as dag:
        RollbackChampionOperator(task_id="rollback", model=spec.name, outlets=[champion_asset(spec.name)])
    return apply_timeouts(dag, spec)
