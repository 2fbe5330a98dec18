"""The training DAG end to end with ``dag.test()``: real Postgres metadata DB, real MLflow server.

Order matters inside this module: the first test creates the champion the later ones compare with.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import DATA_END
from tests.integration.helpers import run_dag

pytestmark = pytest.mark.integration


def _versions(client, name: str) -> list[str]:
    return sorted(mv.version for mv in client.search_model_versions(f"name = '{name}'"))


def _champion(client, name: str):
    from include.nightshift.registry import get_alias

    return get_alias(client, name, "champion")


def _promotions(warehouse, model: str) -> list[tuple]:
    from tests.integration.helpers import query

    return query(
        warehouse,
        "SELECT from_version, to_version, kind, reason, dag_id FROM monitoring.promotions WHERE model = %s ORDER BY id",
        (model,),
    )


def test_first_run_promotes_and_records_everything(landing, spec, mlflow_client, warehouse, platform):
    from nightshift_airflow.factory import training_dag

    result = run_dag(training_dag(spec), DATA_END)

    assert result.state == "success", result
    assert set(result.tasks.values()) == {"success"}, result.tasks
    champion = _champion(mlflow_client, "churn")
    assert champion is not None
    tags = champion.tags
    assert tags["nightshift.gate"] == "passed"
    assert tags["nightshift.compared_with_version"] == "none"
    assert "no champion yet" in tags["nightshift.gate_summary"]
    assert tags["nightshift.promoted_by"].startswith("churn_training/")
    assert json.loads(tags["nightshift.gate_rules"])["floors"]["roc_auc"] == spec.gate.floors["roc_auc"]
    assert "challenger" in champion.aliases
    assert tags["nightshift.promotion_kind"] == "gate"
    (move,) = _promotions(warehouse, "churn")
    assert move[0] is None and move[1:3] == (champion.version, "gate")
    assert move[3].startswith("gate passed") and move[4] == "churn_training"

    run = mlflow_client.get_run(champion.run_id)
    window_end = DATA_END - timedelta(days=spec.target.label_delay_days)
    assert run.data.params["window_end"] == window_end.isoformat()
    assert run.data.params["window_start"] == (window_end - timedelta(days=spec.training.window_days - 1)).isoformat()
    assert len(run.data.params["data_hash"]) == 64
    assert run.data.metrics["holdout_roc_auc"] > 0.7
    assert run.data.metrics["gate_challenger_roc_auc"] == pytest.approx(run.data.metrics["holdout_roc_auc"])
    artifacts = {a.path for a in mlflow_client.list_artifacts(champion.run_id, "validation")}
    assert artifacts == {f"validation/{s}.json" for s in ("raw_features", "raw_labels", "training_set")}

    from mlflow.models import get_model_info

    info = get_model_info("models:/churn@champion")
    assert [c.name for c in info.signature.inputs.inputs] == spec.feature_names
    _assert_training_lineage(platform, result.run_id, spec, landing, champion.version)


def _assert_training_lineage(platform, run_id: str, spec, landing: str, version: str) -> None:
    """OpenLineage (file transport): the window's landing files in, the registered version out, and
    the GX results on the landing files as data-quality facets."""
    from tests.integration.helpers import lineage_of

    events = lineage_of(platform, run_id)
    window_end = DATA_END - timedelta(days=spec.target.label_delay_days)
    day = window_end.isoformat()
    features = spec.landing.features(landing, day).removeprefix("file://")
    labels = spec.landing.labels(landing, day).removeprefix("file://")
    read = {(d["namespace"], d["name"]) for d in events["build_training_set"]["inputs"]}
    assert {("file", features), ("file", labels)} <= read
    assert len(read) == 2 * spec.training.window_days, len(read)
    registered = [(d["namespace"], d["name"]) for d in events["register"]["outputs"]]
    assert registered == [(f"mlflow://127.0.0.1:{platform.mlflow_port}", f"churn/versions/{version}")]
    checked = {d["name"]: d for d in events["validate_raw_features"]["inputs"]}
    facet = checked[features]["inputFacets"]["dataQualityAssertions"]
    assert facet["assertions"] and all(a["success"] for a in facet["assertions"])


def test_second_run_is_gated_against_the_champion(landing, spec, mlflow_client):
    from nightshift_airflow.factory import training_dag

    before = _champion(mlflow_client, "churn")
    result = run_dag(training_dag(spec), DATA_END, conf={"window_end": (DATA_END - timedelta(days=9)).isoformat()})

    assert result.state == "success", result
    new = max(_versions(mlflow_client, "churn"), key=int)
    mv = mlflow_client.get_model_version("churn", new)
    assert mv.tags["nightshift.compared_with_version"] == before.version
    assert "vs champion" in mv.tags["nightshift.gate_summary"]
    verdict = mv.tags["nightshift.gate"]
    assert verdict in ("passed", "rejected")
    expected_champion = new if verdict == "passed" else before.version
    assert _champion(mlflow_client, "churn").version == expected_champion
    assert result.tasks["promote"] == ("success" if verdict == "passed" else "skipped")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(
            "out_of_range", ["churn_raw_features", "tenure_months", "-5", "date=2026-11-01"], id="out-of-range"
        ),
        pytest.param("missing_column", ["column 'monthly_charges' is missing", "date=2026-11-01"], id="missing-column"),
        pytest.param("wrong_dtype", ["column 'tenure_months' has type string", "the spec needs int"], id="wrong-dtype"),
    ],
)
def test_bad_raw_data_fails_at_raw_validation(kind, expected, platform, spec, mlflow_client, tmp_path, monkeypatch):
    from datetime import date

    from include.nightshift.sample import SampleOptions, generate
    from nightshift_airflow.factory import training_dag

    root = (tmp_path / "landing").as_uri()
    generate(
        spec,
        root,
        SampleOptions(start=DATA_END - timedelta(days=41), end=DATA_END, bad_dates=(date(2026, 11, 1),), bad_kind=kind),
    )
    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", root)
    champion_before = _champion(mlflow_client, "churn")
    versions_before = _versions(mlflow_client, "churn")

    result = run_dag(training_dag(spec), DATA_END)

    assert result.state == "failed"
    assert result.tasks["validate_raw_features"] == "failed"
    assert result.tasks["train"] in ("upstream_failed", None)
    message = result.errors["validate_raw_features"]
    for needle in expected:
        assert needle in message, message
    assert _versions(mlflow_client, "churn") == versions_before, "nothing may be registered"
    assert _champion(mlflow_client, "churn").version == champion_before.version


def test_missing_partitions_fail_with_the_list(platform, spec, tmp_path, monkeypatch):
    from nightshift_airflow.factory import training_dag

    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", (tmp_path / "empty").as_uri())
    result = run_dag(training_dag(spec), DATA_END)

    assert result.state == "failed"
    message = result.errors["validate_raw_features"]
    assert f"{spec.training.window_days} of {spec.training.window_days} features partitions are missing" in message
    assert "dates 2026-10-17..2026-11-13" in message
    assert "empty/churn/features/date=2026-10-17/part-0.parquet" in message


def test_force_promote_without_reason_is_refused(landing, spec):
    from nightshift_airflow.factory import training_dag

    result = run_dag(training_dag(spec), DATA_END, conf={"force_promote": True})

    assert result.state == "failed"
    assert result.failed_task() == "resolve_run"
    assert "'force_reason' is empty" in result.errors["resolve_run"]


@pytest.fixture
def strict_models(tmp_path, monkeypatch) -> Path:
    """A second spec, added as a YAML file only: same data, a floor no model reaches."""
    import yaml

    from include.nightshift.spec import DEFAULT_MODELS_DIR

    raw = yaml.safe_load((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    raw["name"] = "churn_strict"
    raw["gate"] = {"floors": {"roc_auc": 0.99}, "max_regression": {"roc_auc": 0.0}}
    models = tmp_path / "models"
    models.mkdir()
    (models / "churn.yaml").write_text((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    (models / "churn_strict.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("NIGHTSHIFT_MODELS_DIR", str(models))
    return models


def test_a_second_spec_gets_working_dags_and_a_rejection_keeps_no_champion(landing, strict_models, mlflow_client):
    from nightshift_airflow.factory import build_all

    dags = {d.dag_id: d for d in build_all()}
    assert {"churn_training", "churn_strict_training"} <= set(dags)

    result = run_dag(dags["churn_strict_training"], DATA_END)

    assert result.state == "success", "a gate rejection is a decision, not a failure"
    assert result.tasks["gate"] == "success"
    assert result.tasks["promote"] == "skipped"
    assert _champion(mlflow_client, "churn_strict") is None
    mv = mlflow_client.get_model_version_by_alias("churn_strict", "challenger")
    assert mv.tags["nightshift.gate"] == "rejected"
    assert "roc_auc" in mv.tags["nightshift.gate_summary"] and "not >= floor 0.99" in mv.tags["nightshift.gate_summary"]


def test_force_promote_with_reason_moves_champion_and_says_why(landing, strict_models, mlflow_client, warehouse):
    from nightshift_airflow.factory import build_all

    dags = {d.dag_id: d for d in build_all()}
    reason = "INC-4711: regulator-approved model, floor waived"
    result = run_dag(dags["churn_strict_training"], DATA_END, conf={"force_promote": True, "force_reason": reason})

    assert result.state == "success", result
    champion = _champion(mlflow_client, "churn_strict")
    assert champion is not None
    assert champion.tags["nightshift.gate"] == "forced"
    assert champion.tags["nightshift.force_reason"] == reason
    assert "FORCED" in champion.tags["nightshift.promotion_reason"]
    (move,) = _promotions(warehouse, "churn_strict")
    assert move[1:3] == (champion.version, "force") and reason in move[3]
