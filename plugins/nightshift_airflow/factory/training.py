"""The ``<model>_training`` DAG: validate, build the training set, train, evaluate, register, gate, promote."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, AssetOrTimeSchedule, Param, XComArg

from include.nightshift.sources import needs_landing
from nightshift_airflow.factory.common import (
    LANDING_ROOT,
    TRAINING_POOL,
    WORK_ROOT,
    apply_timeouts,
    champion_asset,
    cron,
    model_dag,
    optional_date,
    retraining_asset,
)
from nightshift_airflow.factory.docs import TRAINING_DOC
from nightshift_airflow.operators.landing import LandWindowOperator
from nightshift_airflow.operators.promotion import ApprovePromotionOperator, PromoteChampionOperator
from nightshift_airflow.operators.search import PlanSearchOperator, SearchTrialOperator
from nightshift_airflow.operators.training import (
    BuildTrainingSetOperator,
    EvaluateChallengerOperator,
    GateOperator,
    RegisterModelOperator,
    ResolveTrainingRunOperator,
    TrainModelOperator,
)
from nightshift_airflow.operators.validation import ValidateLandingOperator, ValidateTrainingSetOperator

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from include.nightshift.spec import ModelSpec


def training_params(spec: ModelSpec) -> dict[str, Param]:
    """The trigger form: window end, algorithm, and a forced promotion with its reason."""
    return {
        "window_end": optional_date(
            "End of the training window",
            "Last labelled day to train on. Empty: the last day whose labels "
            f"have landed (run date minus {spec.target.label_delay_days} days).",
        ),
        "algorithm": Param(
            spec.training.algorithm,
            type="string",
            enum=spec.training_algorithms(),
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


def _promotion(spec: ModelSpec, gate: GateOperator) -> None:
    """``promote`` after the gate, behind ``approve_promotion`` when the spec asks for an approval."""
    m = spec.name
    if not spec.promotion.approval:
        gate >> PromoteChampionOperator(task_id="promote", model=m, decision=gate.output, outlets=[champion_asset(m)])
        return
    approve = ApprovePromotionOperator(
        task_id="approve_promotion",
        model=m,
        decision=gate.output,
        response_timeout=timedelta(hours=spec.promotion.approval_timeout_hours),
    )
    promote = PromoteChampionOperator(
        task_id="promote",
        model=m,
        decision=gate.output,
        approval=approve.output,
        outlets=[champion_asset(m)],
        # shadow mode: the approval is skipped when the challenger only enters shadow, and promote must run
        trigger_rule="none_failed" if spec.promotion.mode == "shadow" else "all_success",
    )
    gate >> approve >> promote


def _search_tasks(
    spec: ModelSpec, resolve: BaseOperator, build: BaseOperator, checked: BaseOperator
) -> tuple[BaseOperator, Any] | None:
    """``plan_search`` and the mapped ``trial`` tasks (in the training pool), when the spec has a search."""
    if spec.training.search is None:
        return None
    plan = PlanSearchOperator(task_id="plan_search", model=spec.name, resolved=resolve.output)
    trial = SearchTrialOperator.partial(
        task_id="trial", pool=TRAINING_POOL, model=spec.name, training_set=build.output
    ).expand(trial=plan.output)
    checked >> plan >> trial
    return plan, trial


def _training_tasks(spec: ModelSpec) -> None:
    m = spec.name
    resolve = ResolveTrainingRunOperator(task_id="resolve_run", model=m)
    raw: dict[str, BaseOperator] = {
        stage: ValidateLandingOperator(
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
        task_id="build_training_set", model=m, resolved=resolve.output, landing_root=LANDING_ROOT, work_root=WORK_ROOT
    )
    checked = ValidateTrainingSetOperator(
        task_id="validate_training_set", model=m, training_set=build.output, work_root=WORK_ROOT
    )
    validations = {stage: XComArg(op, key="summary") for stage, op in raw.items()}
    search = _search_tasks(spec, resolve, build, checked)
    train = TrainModelOperator(
        task_id="train",
        pool=TRAINING_POOL,
        model=m,
        resolved=resolve.output,
        training_set=build.output,
        validations={**validations, "training_set": XComArg(checked, key="summary")},
        **({"search_plan": search[0].output, "trials": search[1].output} if search else {}),
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
    if needs_landing(spec):  # CSV files and SQL queries become Parquet first, a file per day and kind
        land = LandWindowOperator(
            task_id="land", model=m, resolved=resolve.output, landing_root=LANDING_ROOT, work_root=WORK_ROOT
        )
        resolve >> land >> list(raw.values())
    resolve >> list(raw.values()) >> build >> checked >> train
    if search:
        search[1] >> train
    train >> evaluate >> register >> gate
    _promotion(spec, gate)


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
    timetable = cron(spec.schedules.training)
    asset = retraining_asset(spec.name)
    schedule = AssetOrTimeSchedule(timetable=timetable, assets=[asset]) if timetable else [asset]
    description = f"Train, gate and promote {spec.name}"
    params = training_params(spec)
    with model_dag(spec, "training", description, doc, params, max_active_runs=1, schedule=schedule) as dag:
        _training_tasks(spec)
    return apply_timeouts(dag, spec)
