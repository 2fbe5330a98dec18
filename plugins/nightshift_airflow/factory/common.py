"""What every generated DAG shares: schedules, Assets, pools, Variables, defaults, alerts."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param

from include.nightshift.spec.timeouts import task_kind
from nightshift_airflow.notifiers import FailureAlert, RunFailureAlert

if TYPE_CHECKING:
    from include.nightshift.spec import ModelSpec

LANDING_ROOT = "{{ var.value.nightshift_landing_root }}"
WORK_ROOT = "{{ var.value.nightshift_work_root }}"
REPORTS_ROOT = "{{ var.value.nightshift_reports_root }}"
TRAINING_POOL = "nightshift_training"  # declared in airflow_settings.yaml
SCORING_POOL = "nightshift_scoring"


def cron(expression: str | None) -> CronTriggerTimetable | None:
    """A cron schedule in UTC that waits for its next time after the DAG is unpaused.

    Without a ``start_date`` and with ``run_immediately=False``, unpausing a DAG does not start a
    catch-up run for the last missed time; the next run is the next scheduled one.
    """
    return CronTriggerTimetable(expression, timezone="UTC", run_immediately=False) if expression else None


def optional_date(title: str, description: str) -> Param:
    """A date field of the trigger form that may stay empty (nullable: an empty non-nullable field
    disables the form's Trigger button)."""
    return Param(None, type=["null", "string"], format="date", title=title, description=description)


def champion_asset(model: str) -> Asset:
    """The Asset updated whenever a model's ``@champion`` alias moves."""
    return Asset(name=f"{model}_champion", uri=f"nightshift://models/{model}/champion", group="model")


def scores_asset(model: str) -> Asset:
    """The Asset updated whenever a day of a model's scores is published (extra: date, rows, version)."""
    return Asset(name=f"{model}_scores", uri=f"nightshift://scores/{model}", group="scores")


def retraining_asset(model: str) -> Asset:
    """The Asset the monitoring DAG updates when drift or decay asks for retraining; it schedules training."""
    return Asset(name=f"{model}_retraining", uri=f"nightshift://models/{model}/retraining", group="model")


def default_args(spec: ModelSpec) -> dict[str, Any]:
    """Every task: the spec's retries, and the on-call alert on its final failure (not on retries)."""
    return {
        "owner": spec.owner,
        "retries": spec.runs.retries,
        "retry_delay": timedelta(seconds=spec.runs.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "on_failure_callback": [FailureAlert(spec.name, spec.alerts.email_to)],
    }


def apply_timeouts(dag: DAG, spec: ModelSpec) -> DAG:
    """Every task gets an ``execution_timeout`` from ``runs.timeout_minutes`` (by kind, with defaults).

    A task that sets its own (the approval's is the time a person has to answer) keeps it.
    """
    for task in dag.tasks:
        if task.execution_timeout is None:
            task.execution_timeout = timedelta(minutes=spec.runs.timeout_for(task_kind(task.task_id)))
    return dag


def model_dag(
    spec: ModelSpec,
    kind: str,
    description: str,
    doc: str,
    params: dict[str, Param],
    max_active_runs: int,
    schedule: Any = None,
    **kwargs: Any,
) -> DAG:
    """The DAG ``<model>_<kind>`` with what every model DAG shares: schedule, tags, defaults, alerts, timeout."""
    return DAG(
        dag_id=f"{spec.name}_{kind}",
        dag_display_name=f"{spec.name}: {kind}",
        description=description,
        doc_md=doc,
        schedule=schedule if schedule is not None else cron(getattr(spec.schedules, kind, None)),
        catchup=False,
        max_active_runs=max_active_runs,
        tags=["nightshift", kind, f"model:{spec.name}", *spec.tags],
        params=params,
        default_args=default_args(spec),
        on_failure_callback=[RunFailureAlert(spec.name, spec.alerts.email_to)],
        dagrun_timeout=timedelta(hours=3),
        **kwargs,
    )
