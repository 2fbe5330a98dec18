"""The ``<model>_scoring`` DAG: pin @champion, check the input, score in mapped shards, check, publish."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow.sdk import XComArg
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

from include.nightshift.sources import needs_landing
from nightshift_airflow.factory.common import (
    LANDING_ROOT,
    SCORING_POOL,
    WORK_ROOT,
    apply_timeouts,
    model_dag,
    optional_date,
    scores_asset,
)
from nightshift_airflow.factory.docs import SCORING_DOC
from nightshift_airflow.notifiers import scores_deadline_missed
from nightshift_airflow.operators.landing import LandScoringDayOperator
from nightshift_airflow.operators.scoring import (
    AssembleScoresOperator,
    PublishScoresOperator,
    ResolveScoringRunOperator,
    ScoreShardOperator,
)
from nightshift_airflow.operators.validation import ValidateScoredOutputOperator, ValidateScoringInputOperator

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from include.nightshift.spec import ModelSpec


def scores_deadline(spec: ModelSpec) -> DeadlineAlert | None:
    """On-call hears when a run is not done ``monitoring.scores_due_minutes`` after it was queued."""
    due = spec.monitoring.scores_due_minutes
    if not due:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=due),
        callback=AsyncCallback(
            scores_deadline_missed, kwargs={"model": spec.name, "email_to": list(spec.alerts.email_to)}
        ),
    )


def _scoring_tasks(spec: ModelSpec) -> None:
    m = spec.name
    resolve = ResolveScoringRunOperator(task_id="resolve_run", model=m, landing_root=LANDING_ROOT, work_root=WORK_ROOT)
    if needs_landing(spec):  # CSV files and SQL queries become the day's Parquet first
        LandScoringDayOperator(task_id="land", model=m, landing_root=LANDING_ROOT, work_root=WORK_ROOT) >> resolve
    run = XComArg(resolve, key="run")
    check_input = ValidateScoringInputOperator(task_id="validate_input", model=m, resolved=run, work_root=WORK_ROOT)
    score = ScoreShardOperator.partial(task_id="score", model=m, resolved=run, pool=SCORING_POOL).expand(
        shard=resolve.output
    )
    assemble = AssembleScoresOperator(task_id="assemble", model=m, resolved=run, shards=score.output)
    check_output = ValidateScoredOutputOperator(
        task_id="validate_output", model=m, resolved=run, shards=score.output, work_root=WORK_ROOT
    )
    publish = PublishScoresOperator(
        task_id="publish", model=m, resolved=run, scored=assemble.output, outlets=[scores_asset(m)]
    )
    # Each suite runs beside the work it judges (the input suite beside the shards, the output suite
    # beside the key build), so its task start and GX import no longer wait in line (docs/benchmarks.md).
    # Nothing is published unless both passed; a failing suite gives the date back and the task beside
    # it ends as skipped.
    resolve >> [check_input, score]
    [check_input, score] >> assemble
    [check_input, score] >> check_output
    [assemble, check_output] >> publish


def scoring_dag(spec: ModelSpec) -> DAG:
    """The ``<model>_scoring`` DAG."""
    doc = SCORING_DOC.format(
        name=spec.name,
        description=spec.description,
        features_uri=spec.landing.features_uri,
        shard_rows=spec.scoring.shard_rows,
        schema=spec.scoring.schema_name,
        max_q=spec.scoring.max_quarantine_fraction,
        due=spec.monitoring.scores_due_minutes or "(no deadline)",
        schedule=spec.schedules.scoring,
        owner=spec.owner,
    )
    params = {
        "run_date": optional_date("Score date", "The day of features to score and replace. Empty: the run's own date."),
    }
    # Several dates may be scored at once (a backfill); one date is never written by two runs (the lease).
    description = f"Score {spec.name} with @champion into PostgreSQL"
    deadline = scores_deadline(spec)
    with model_dag(spec, "scoring", description, doc, params, max_active_runs=3, deadline=deadline) as dag:
        _scoring_tasks(spec)
    return apply_timeouts(dag, spec)
