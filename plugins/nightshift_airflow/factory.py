"""The DAG factory: every spec in ``include/models/`` becomes that model's DAGs.

A new YAML file yields a new set of DAGs with no code change. A spec that fails validation does not
take the other models down: it becomes a one-task DAG ``<file>_invalid_spec`` that fails with the
validation message, so the problem is visible in the UI and in alerts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

from include.nightshift.errors import SpecError
from include.nightshift.spec import ALGORITHMS, ModelSpec, load_spec, models_dir
from nightshift_airflow.notifiers import FailureAlert, RunFailureAlert, scores_deadline_missed
from nightshift_airflow.operators.monitoring import (
    CheckDriftOperator,
    RealisedPerformanceOperator,
    RequestRetrainingOperator,
    ResolveMonitoringRunOperator,
)
from nightshift_airflow.operators.promotion import (
    ApprovePromotionOperator,
    PromoteChampionOperator,
    RollbackChampionOperator,
)
from nightshift_airflow.operators.scoring import (
    AssembleScoresOperator,
    PublishScoresOperator,
    ResolveScoringRunOperator,
    ScoreShardOperator,
)
from nightshift_airflow.operators.training import (
    BuildTrainingSetOperator,
    EvaluateChallengerOperator,
    GateOperator,
    RegisterModelOperator,
    ResolveTrainingRunOperator,
    TrainModelOperator,
)
from nightshift_airflow.operators.validation import ValidateDataOperator

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def cron(expression: str | None) -> CronTriggerTimetable | None:
    """A cron schedule in UTC that waits for its next time after the DAG is unpaused.

    Without a ``start_date`` and with ``run_immediately=False``, unpausing a DAG does not start a
    catch-up run for the last missed time; the next run is the next scheduled one.
    """
    return CronTriggerTimetable(expression, timezone="UTC", run_immediately=False) if expression else None


LANDING_ROOT = "{{ var.value.nightshift_landing_root }}"
TRAINING_POOL = "nightshift_training"  # declared in airflow_settings.yaml
SCORING_POOL = "nightshift_scoring"
WORK_ROOT = "{{ var.value.nightshift_work_root }}"
REPORTS_ROOT = "{{ var.value.nightshift_reports_root }}"


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


TRAINING_DOC = """
### {name} training

{description}

**What it does:** validates the landing data of the training window (GX suites
`{name}_raw_features`, `{name}_raw_labels`), joins features with labels and splits by time (the
last {holdout} labelled days are the holdout), validates the training set (`{name}_training_set`),
trains a scikit-learn pipeline in one MLflow run, scores the same holdout with the challenger and
the current `@champion`, registers the challenger (alias `challenger`), and applies the gate:
floors {floors}, largest regression against the champion {regression}. When the gate passes,
`@champion` moves to the new version and the Asset `{name}_champion` is updated.

**Schedule:** `{schedule}` (UTC), whenever `{name}_monitoring` requests retraining (Asset
`{name}_retraining`: drift or performance decay), or trigger with the form. Leave everything empty
for the usual run: the window ends on the last day whose labels have landed ({delay} days ago).

**Inputs:** `{features_uri}`, `{labels_uri}` ({{root}} = Variable `nightshift_landing_root`).
**Outputs:** MLflow experiment `nightshift-{name}`, registered model `{name}`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""


def training_dag(spec: ModelSpec) -> DAG:
    """The ``<model>_training`` DAG."""
    doc = TRAINING_DOC.format(
        name=spec.name,
        description=spec.description,
        holdout=spec.training.holdout_days,
        floors=dict(spec.gate.floors),
        regression=dict(spec.gate.max_regression),
        schedule=spec.schedules.training,
        delay=spec.target.label_delay_days,
        features_uri=spec.landing.features_uri,
        labels_uri=spec.landing.labels_uri,
        owner=spec.owner,
    )
    params = {
        "window_end": optional_date(
            "End of the training window",
            "Last labelled day to train on. Empty: the last day whose labels "
            f"have landed (run date minus {spec.target.label_delay_days} days).",
        ),
        "algorithm": Param(
            spec.training.algorithm,
            type="string",
            enum=list(ALGORITHMS),
            title="Algorithm",
            description="Override the spec's algorithm for this run only.",
        ),
        "force_promote": Param(
            False,
            type="boolean",
            title="Force promotion",
            description="Promote even if the gate rejects the model. Needs a reason.",
        ),
        # Nullable: the trigger form treats an empty non-nullable field as missing and disables "Trigger".
        "force_reason": Param(
            None,
            type=["null", "string"],
            title="Reason for forcing",
            description="Required with 'Force promotion'; recorded on the model version.",
        ),
    }
    timetable = cron(spec.schedules.training)
    asset = retraining_asset(spec.name)
    schedule = AssetOrTimeSchedule(timetable=timetable, assets=[asset]) if timetable else [asset]
    description = f"Train, gate and promote {spec.name}"
    with model_dag(spec, "training", description, doc, params, max_active_runs=1, schedule=schedule) as dag:
        m = spec.name
        resolve = ResolveTrainingRunOperator(task_id="resolve_run", model=m)
        raw = {
            stage: ValidateDataOperator(
                task_id=f"validate_{stage}",
                model=m,
                stage=stage,
                resolved=resolve.output,
                landing_root=LANDING_ROOT,
                work_root=WORK_ROOT,
            )
            for stage in ("raw_features", "raw_labels")
        }
        build = BuildTrainingSetOperator(
            task_id="build_training_set",
            model=m,
            resolved=resolve.output,
            landing_root=LANDING_ROOT,
            work_root=WORK_ROOT,
        )
        checked = ValidateDataOperator(
            task_id="validate_training_set",
            model=m,
            stage="training_set",
            training_set=build.output,
            work_root=WORK_ROOT,
        )
        train = TrainModelOperator(
            task_id="train",
            pool=TRAINING_POOL,
            model=m,
            resolved=resolve.output,
            training_set=build.output,
            validations={
                **{stage: op.output["summary"] for stage, op in raw.items()},
                "training_set": checked.output["summary"],
            },
        )
        evaluate = EvaluateChallengerOperator(
            task_id="evaluate", pool=TRAINING_POOL, model=m, trained=train.output, training_set=build.output
        )
        register = RegisterModelOperator(task_id="register", model=m, trained=train.output, training_set=build.output)
        gate = GateOperator(
            task_id="gate",
            model=m,
            resolved=resolve.output,
            trained=train.output,
            evaluation=evaluate.output,
            version=register.output,
        )
        resolve >> list(raw.values()) >> build >> checked >> train
        train >> evaluate >> register >> gate
        if spec.promotion.approval:
            approve = ApprovePromotionOperator(
                task_id="approve_promotion",
                model=m,
                decision=gate.output,
                response_timeout=timedelta(hours=spec.promotion.approval_timeout_hours),
            )
            promote = PromoteChampionOperator(
                task_id="promote", model=m, decision=gate.output, approval=approve.output, outlets=[champion_asset(m)]
            )
            gate >> approve >> promote
        else:
            promote = PromoteChampionOperator(
                task_id="promote", model=m, decision=gate.output, outlets=[champion_asset(m)]
            )
            gate >> promote
    return dag


SCORING_DOC = """
### {name} scoring

{description}

**What it does:** pins the version holding `@champion` for the whole run (no champion: the run fails
at once), checks the day's features `{features_uri}` (GX suite `{name}_scoring_input`), scores them in
record batches and loads them with COPY into a staging table ({shard_rows:,} rows per mapped shard),
validates the loaded rows in the database (GX suite `{name}_scored_output`), then swaps them in as the
day's partition of `{schema}.{name}_scores` in one transaction and updates the Asset `{name}_scores`.
Rows breaking a row rule go to `{schema}.{name}_quarantine`; above {max_q:.1%} of the day the run fails
and publishes nothing. **Deadline:** on-call is told when a run has not finished {due} minutes after
it was queued (`monitoring.scores_due_minutes`).

**Schedule:** `{schedule}` (UTC), scoring the features of the run's date. **Re-run a day:** trigger with
`run_date`; the day's rows are replaced atomically. Two runs for one date never interleave: the second
waits (retries) until the first is done.

**Inputs:** `{features_uri}` ({{root}} = Variable `nightshift_landing_root`), the model version
holding `@champion`. **Outputs:** `{schema}.{name}_scores` (a partition per day),
`{schema}.{name}_latest_scores`, `{schema}.{name}_quarantine`, Asset `{name}_scores`. Analysts read
them with the role `nightshift_analyst`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""


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
    due = spec.monitoring.scores_due_minutes
    deadline = (
        DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(minutes=due),
            callback=AsyncCallback(
                scores_deadline_missed, kwargs={"model": spec.name, "email_to": list(spec.alerts.email_to)}
            ),
        )
        if due
        else None
    )
    with model_dag(spec, "scoring", description, doc, params, max_active_runs=3, deadline=deadline) as dag:
        m = spec.name
        resolve = ResolveScoringRunOperator(task_id="resolve_run", model=m, landing_root=LANDING_ROOT)
        run = resolve.output["run"]
        check_input = ValidateDataOperator(
            task_id="validate_input", model=m, stage="scoring_input", resolved=run, work_root=WORK_ROOT
        )
        score = ScoreShardOperator.partial(task_id="score", model=m, resolved=run, pool=SCORING_POOL).expand(
            shard=resolve.output
        )
        assemble = AssembleScoresOperator(task_id="assemble", model=m, resolved=run, shards=score.output)
        check_output = ValidateDataOperator(
            task_id="validate_output",
            model=m,
            stage="scored_output",
            resolved=run,
            scored=assemble.output,
            work_root=WORK_ROOT,
        )
        publish = PublishScoresOperator(
            task_id="publish", model=m, resolved=run, scored=assemble.output, outlets=[scores_asset(m)]
        )
        resolve >> check_input >> score >> assemble >> check_output >> publish
    return dag


MONITORING_DOC = """
### {name} monitoring

**What it does:** for each newly published day of `{schema}.{name}_scores` (Asset `{name}_scores`),
compares the day's features `{features_uri}` with the reference sample saved with the model version
that scored it: an Evidently report (data drift preset and data summary) on a seeded sample of at
most {sample_rows:,} rows, saved under `{{reports root}}/{name}/drift/date=<day>/` and in that
version's MLflow run, with per-feature verdicts in `monitoring.drift_features` and a summary in
`monitoring.drift_runs`. When the labels of the day scored {delay} days earlier have landed, it
measures those scores (ROC AUC, PR AUC, precision, recall, Brier score, calibration error) into
`monitoring.performance`.

**Retraining:** when at least {drift_share:.0%} of the features drift, or realised performance breaks
`monitoring.performance_floors` {floors} or falls more than `monitoring.max_decay` {decay} below the
model's holdout, `request_retraining` tells on-call and updates the Asset `{name}_retraining`,
which schedules `{name}_training`. Otherwise it is skipped.

**Schedule:** whenever `{name}_scoring` publishes a day (Asset `{name}_scores`). **Re-run a day:**
trigger with `score_date`; the day's rows and report are replaced.

**Inputs:** the published scores, `{features_uri}`, the labels, the reference sample in MLflow.
**Outputs:** `monitoring.drift_runs`, `monitoring.drift_features`, `monitoring.performance`,
`monitoring.alerts`, the HTML reports (Variable `nightshift_reports_root`), Asset `{name}_retraining`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""


def monitoring_dag(spec: ModelSpec) -> DAG:
    """The ``<model>_monitoring`` DAG, scheduled on the model's scores Asset."""
    doc = MONITORING_DOC.format(
        name=spec.name,
        schema=spec.scoring.schema_name,
        features_uri=spec.landing.features_uri,
        sample_rows=spec.monitoring.sample_rows,
        delay=spec.target.label_delay_days,
        drift_share=spec.monitoring.drift_share,
        floors=dict(spec.monitoring.performance_floors),
        decay=dict(spec.monitoring.max_decay),
        owner=spec.owner,
    )
    params = {
        "score_date": optional_date(
            "Scored day", "The published day to monitor again. Empty: the days just published (or the latest)."
        ),
    }
    description = f"Drift and realised performance of {spec.name}; requests retraining"
    with model_dag(
        spec, "monitoring", description, doc, params, max_active_runs=1, schedule=[scores_asset(spec.name)]
    ) as dag:
        m = spec.name
        resolve = ResolveMonitoringRunOperator(task_id="resolve_run", model=m, landing_root=LANDING_ROOT)
        drift = CheckDriftOperator.partial(task_id="drift", model=m, reports_root=REPORTS_ROOT).expand(
            day=resolve.output
        )
        performance = RealisedPerformanceOperator.partial(task_id="performance", model=m).expand(day=resolve.output)
        request = RequestRetrainingOperator(
            task_id="request_retraining",
            model=m,
            drift=drift.output,
            performance=performance.output,
            outlets=[retraining_asset(m)],
        )
        resolve >> [drift, performance] >> request
    return dag


ROLLBACK_DOC = """
### {name} rollback

**What it does:** moves `@champion` of the registered model `{name}` back to the version you choose,
after checking that it exists and was once validated (it passed the gate or held `@champion`
before). The move is recorded on the model version (tags `nightshift.promotion_*`,
`nightshift.requested_by`, `nightshift.previous_champion`) and as a row of `monitoring.promotions`
(who, why, from and to which version), and updates the Asset `{name}_champion`. The next
`{name}_scoring` run scores with that version; re-run recent days with `run_date` to re-score them.

**Schedule:** none: trigger it with the form (version and reason are required).
**Inputs:** MLflow registry. **Outputs:** alias `@champion`, `monitoring.promotions`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md#rollback-rollback`.
"""


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
    return dag


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
