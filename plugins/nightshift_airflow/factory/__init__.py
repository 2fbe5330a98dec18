"""The DAG factory: every spec in ``include/models/`` becomes that model's DAGs.

A new YAML file yields a new set of DAGs with no code change. A spec that fails validation does not
take the other models down: it becomes a one-task DAG ``<file>_invalid_spec`` that fails with the
validation message, so the problem is visible in the UI and in alerts.

One module per DAG kind (:mod:`.training`, :mod:`.scoring`, :mod:`.monitoring`, :mod:`.rollback`,
:mod:`.shadow` for ``promotion.mode: shadow``);
what they share is in :mod:`.common`, their docs in :mod:`.docs`. The files only wire operators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG

from include.nightshift.errors import SpecError
from include.nightshift.spec import load_spec, models_dir
from nightshift_airflow.factory.common import champion_asset, cron, retraining_asset, scores_asset
from nightshift_airflow.factory.monitoring import monitoring_dag
from nightshift_airflow.factory.rollback import rollback_dag
from nightshift_airflow.factory.scoring import scoring_dag
from nightshift_airflow.factory.shadow import shadow_dag
from nightshift_airflow.factory.training import training_dag
from nightshift_airflow.notifiers import FailureAlert, RunFailureAlert

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = [
    "build_all",
    "champion_asset",
    "cron",
    "invalid_spec_dag",
    "monitoring_dag",
    "retraining_asset",
    "rollback_dag",
    "scores_asset",
    "scoring_dag",
    "shadow_dag",
    "training_dag",
]


def invalid_spec_dag(path: Path, error: SpecError) -> DAG:
    """A DAG that shows a broken spec in the UI and fails with its validation message."""
    from airflow.providers.standard.operators.python import PythonOperator

    def fail(message: str) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(message)

    with DAG(
        dag_id=f"{path.stem}_invalid_spec",
        schedule=None,
        catchup=False,
        tags=["nightshift", "invalid-spec"],
        doc_md=f"### Invalid model spec\n\n```\n{error}\n```",
        default_args={"owner": "nightshift", "retries": 0, "on_failure_callback": [FailureAlert()]},
        on_failure_callback=[RunFailureAlert()],
    ) as dag:
        PythonOperator(task_id="explain", python_callable=fail, op_args=[str(error)])
    return dag


def build_all(directory: Path | None = None) -> Iterator[DAG]:
    """Every model's DAGs, one spec file at a time (from ``NIGHTSHIFT_MODELS_DIR`` or include/models)."""
    for path in sorted((directory or models_dir()).glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            yield invalid_spec_dag(path, exc)
            continue
        yield training_dag(spec)
        yield scoring_dag(spec)
        yield monitoring_dag(spec)
        yield rollback_dag(spec)
        if spec.promotion.mode == "shadow":
            yield shadow_dag(spec)
