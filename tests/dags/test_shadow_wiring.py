"""The DAGs of a model in ``promotion.mode: shadow``: its shadow DAG, and the live gate in monitoring."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.dags


def build(tmp_path, approval: bool):
    from include.nightshift.spec import DEFAULT_MODELS_DIR
    from nightshift_airflow.factory import build_all

    text = (DEFAULT_MODELS_DIR / "churn.yaml").read_text().replace("name: churn", "name: live", 1)
    text = text.replace("approval: false", f"approval: {'true' if approval else 'false'}\n  mode: shadow")
    (tmp_path / "live.yaml").write_text(text)
    return {d.dag_id: d for d in build_all(tmp_path)}


def downstream(dag, task_id):
    return sorted(dag.get_task(task_id).downstream_task_ids)


def test_shadow_mode_adds_a_shadow_dag_on_the_champions_publish(tmp_path):
    dags = build(tmp_path, approval=False)

    shadow = dags["live_shadow"]
    assert [t.task_id for t in shadow.tasks] == ["score_shadow"]
    assert [a.name for a in shadow.timetable.asset_condition.objects] == ["live_scores"]
    scoring = dags["live_scoring"]
    assert "score_shadow" not in {t.task_id for t in scoring.tasks}, "the champion's publish never waits on it"
    monitoring = dags["live_monitoring"]
    assert downstream(monitoring, "resolve_run") == ["drift", "performance", "shadow_measure"]
    assert downstream(monitoring, "shadow_measure") == ["shadow_gate"]
    assert downstream(monitoring, "shadow_gate") == ["promote_shadow"]
    assert monitoring.get_task("promote_shadow").outlets[0].name == "live_champion"


def test_with_approval_the_live_promotion_waits_for_a_person(tmp_path):
    dags = build(tmp_path, approval=True)

    monitoring = dags["live_monitoring"]
    assert downstream(monitoring, "shadow_gate") == ["approve_shadow_promotion", "promote_shadow"]  # its XCom too
    assert downstream(monitoring, "approve_shadow_promotion") == ["promote_shadow"]
    # training: promote runs when the approval was skipped because the challenger only enters shadow
    assert str(dags["live_training"].get_task("promote").trigger_rule) in ("none_failed", "TriggerRule.NONE_FAILED")


def test_gate_mode_models_get_no_shadow_parts(tmp_path):
    from include.nightshift.spec import DEFAULT_MODELS_DIR
    from nightshift_airflow.factory import build_all

    (tmp_path / "churn.yaml").write_text((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    dags = {d.dag_id: d for d in build_all(tmp_path)}
    assert "churn_shadow" not in dags
    assert not {"shadow_measure", "shadow_gate"} & {t.task_id for t in dags["churn_monitoring"].tasks}
