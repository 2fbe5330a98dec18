"""The ``<model>_shadow`` DAG (``promotion.mode: shadow``): after each champion publish, score the same
day with the challenger in shadow into ``<schema>.<model>_shadow_scores``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nightshift_airflow.factory.common import (
    LANDING_ROOT,
    SCORING_POOL,
    WORK_ROOT,
    apply_timeouts,
    model_dag,
    optional_date,
    scores_asset,
)
from nightshift_airflow.factory.docs import SHADOW_DOC
from nightshift_airflow.operators.shadow import ScoreShadowOperator

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from include.nightshift.spec import ModelSpec


def shadow_dag(spec: ModelSpec) -> DAG:
    """The ``<model>_shadow`` DAG, scheduled on the model's scores Asset (the champion's publish)."""
    doc = SHADOW_DOC.format(
        name=spec.name, schema=spec.scoring.schema_name, days=spec.promotion.shadow_days, owner=spec.owner
    )
    params = {
        "run_date": optional_date(
            "Score date", "The published day to score in shadow. Empty: the days just published."
        ),
    }
    description = f"Score {spec.name} with the @challenger in shadow (beside the champion)"
    with model_dag(
        spec, "shadow", description, doc, params, max_active_runs=1, schedule=[scores_asset(spec.name)]
    ) as dag:
        ScoreShadowOperator(
            task_id="score_shadow", model=spec.name, landing_root=LANDING_ROOT, work_root=WORK_ROOT, pool=SCORING_POOL
        )
    return apply_timeouts(dag, spec)
