"""The ``<model>_monitoring`` DAG, scheduled on the model's scores Asset: drift, realised performance,
and a retraining request when they cross the spec's thresholds."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from nightshift_airflow.factory.common import (
    LANDING_ROOT,
    REPORTS_ROOT,
    WORK_ROOT,
    apply_timeouts,
    champion_asset,
    model_dag,
    optional_date,
    retraining_asset,
    scores_asset,
)
from nightshift_airflow.factory.docs import MONITORING_DOC
from nightshift_airflow.operators.monitoring import (
    CheckDriftOperator,
    RealisedPerformanceOperator,
    RequestRetrainingOperator,
    ResolveMonitoringRunOperator,
)
from nightshift_airflow.operators.promotion import ApprovePromotionOperator, PromoteChampionOperator
from nightshift_airflow.operators.shadow import MeasureShadowOperator, ShadowGateOperator

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from include.nightshift.spec import ModelSpec


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
    schedule = [scores_asset(spec.name)]
    with model_dag(spec, "monitoring", description, doc, params, max_active_runs=1, schedule=schedule) as dag:
        m = spec.name
        roots = {"landing_root": LANDING_ROOT, "work_root": WORK_ROOT}
        resolve = ResolveMonitoringRunOperator(task_id="resolve_run", model=m, **roots)
        drift = CheckDriftOperator.partial(task_id="drift", model=m, reports_root=REPORTS_ROOT, **roots).expand(
            day=resolve.output
        )
        performance = RealisedPerformanceOperator.partial(
            task_id="performance", model=m, reports_root=REPORTS_ROOT, **roots
        ).expand(day=resolve.output)
        request = RequestRetrainingOperator(
            task_id="request_retraining",
            model=m,
            drift=drift.output,
            performance=performance.output,
            outlets=[retraining_asset(m)],
        )
        resolve >> [drift, performance] >> request
        if spec.promotion.mode == "shadow":
            _shadow_tasks(spec, resolve)
    return apply_timeouts(dag, spec)


def _shadow_tasks(spec: ModelSpec, resolve: ResolveMonitoringRunOperator) -> None:
    """Measure both versions on each labelled day, the live gate, (approval,) and the promotion."""
    m = spec.name
    roots = {"landing_root": LANDING_ROOT, "work_root": WORK_ROOT}
    measure = MeasureShadowOperator.partial(
        task_id="shadow_measure", model=m, reports_root=REPORTS_ROOT, **roots
    ).expand(day=resolve.output)
    gate = ShadowGateOperator(task_id="shadow_gate", model=m, measured=measure.output)
    approval = None
    if spec.promotion.approval:
        approval = ApprovePromotionOperator(
            task_id="approve_shadow_promotion",
            model=m,
            decision=gate.output,
            response_timeout=timedelta(hours=spec.promotion.approval_timeout_hours),
        )
    promote = PromoteChampionOperator(
        task_id="promote_shadow",
        model=m,
        decision=gate.output,
        approval=approval.output if approval else None,
        outlets=[champion_asset(m)],
    )
    resolve >> measure >> gate
    if approval:
        gate >> approval >> promote
    else:
        gate >> promote
