"""``<model>_rollback`` and the promotion log, with ``dag.test()``, a real MLflow registry and Postgres.

A model of its own (``churn_rb``, the churn spec under another name) so the order of modules does not
matter: version 1 was champion, version 2 is champion, version 3 was rejected by the gate.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import DATA_END
from tests.integration.helpers import query, run_dag, train_champion, use_models_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rb(landing, mlflow_client, tmp_path_factory):
    """The ``churn_rb`` spec with three versions, and a function building its rollback DAG."""
    import yaml

    from include.nightshift.spec import DEFAULT_MODELS_DIR, load_spec
    from nightshift_airflow.factory import build_all

    raw = yaml.safe_load((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    raw["name"] = "churn_rb"
    models = tmp_path_factory.mktemp("models")
    (models / "churn_rb.yaml").write_text(yaml.safe_dump(raw))
    restore = use_models_dir(models)
    spec = load_spec(models / "churn_rb.yaml")
    train_champion(mlflow_client, spec, landing, DATA_END - timedelta(days=4))  # v1, was champion
    v2 = train_champion(mlflow_client, spec, landing, DATA_END - timedelta(days=2))  # v2, champion now
    v3 = train_champion(mlflow_client, spec, landing, DATA_END)
    mlflow_client.set_registered_model_alias("churn_rb", "champion", v2.version)  # v3 never held it...
    mlflow_client.delete_model_version_tag("churn_rb", v3.version, "nightshift.promoted_at")
    mlflow_client.set_model_version_tag("churn_rb", v3.version, "nightshift.gate", "rejected")  # ...and was rejected
    # A fresh DAG object per run: dag.test() leaves the last run's params on the object it ran.
    yield spec, lambda: next(d for d in build_all(models) if d.dag_id == "churn_rb_rollback")
    restore()


def _champion(client) -> str:
    return client.get_model_version_by_alias("churn_rb", "champion").version


def _log(warehouse) -> list[tuple]:
    from include.nightshift.monitoring import ensure_schema

    ensure_schema(warehouse)  # when this test runs first
    return query(
        warehouse,
        "SELECT from_version, to_version, kind, reason, requested_by, dag_id, run_id FROM monitoring.promotions "
        "WHERE model = 'churn_rb' ORDER BY id",
    )


def test_rollback_moves_the_champion_back_and_records_who_why_and_from_where(rb, mlflow_client, warehouse):
    spec, rollback_dag = rb
    reason = "INC-812: v2 over-predicts churn for new customers"

    result = run_dag(rollback_dag(), DATA_END, conf={"version": 1, "reason": reason})

    assert result.state == "success", result
    assert _champion(mlflow_client) == "1"
    tags = mlflow_client.get_model_version("churn_rb", "1").tags
    assert tags["nightshift.promotion_kind"] == "rollback"
    assert tags["nightshift.promotion_reason"] == reason
    assert tags["nightshift.previous_champion"] == "2"
    assert tags["nightshift.promoted_by"].startswith("churn_rb_rollback/")
    (row,) = _log(warehouse)
    assert row[:4] == ("2", "1", "rollback", reason)
    assert row[4] == "dag_test"  # the run's triggering user: dag.test() triggers as "dag_test"
    assert row[5] == "churn_rb_rollback"


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        pytest.param({"version": 99, "reason": "roll back please"}, "version 99 does not exist", id="missing-version"),
        pytest.param(
            {"version": 3, "reason": "roll back please"}, "its gate verdict is rejected", id="never-validated"
        ),
        pytest.param({"version": 2, "reason": "oops"}, "param 'reason' is 'oops'", id="short-reason"),
        pytest.param({"reason": "roll back please"}, "param 'version' is empty", id="no-version"),
    ],
)
def test_a_refused_rollback_fails_at_once_and_changes_nothing(rb, mlflow_client, warehouse, conf, expected):
    spec, rollback_dag = rb
    champion, log = _champion(mlflow_client), _log(warehouse)

    result = run_dag(rollback_dag(), DATA_END, conf=conf)

    assert result.state == "failed"
    assert expected in result.errors["rollback"], result.errors
    if conf.get("version") == 99:
        assert "(versions: 1, 2, 3)" in result.errors["rollback"]
    assert _champion(mlflow_client) == champion
    assert _log(warehouse) == log


def test_rolling_back_to_the_champion_is_skipped(rb, mlflow_client, warehouse):
    spec, rollback_dag = rb
    champion, log = _champion(mlflow_client), _log(warehouse)

    result = run_dag(rollback_dag(), DATA_END, conf={"version": int(champion), "reason": "make sure of it"})

    assert result.state == "success"
    assert result.tasks["rollback"] == "skipped"
    assert _log(warehouse) == log


def test_an_alias_move_that_fails_leaves_no_log_row(rb, mlflow_client, warehouse):
    from mlflow.exceptions import MlflowException

    from include.nightshift.promotions import ChampionMove, move_champion

    spec, _ = rb
    champion, log = _champion(mlflow_client), _log(warehouse)
    move = ChampionMove(
        kind="rollback", reason="to a version that is not there", requested_by="t", dag_id="d", run_id="r"
    )

    with pytest.raises(MlflowException):
        move_champion(warehouse, mlflow_client, spec, "77", move)

    assert _champion(mlflow_client) == champion
    assert _log(warehouse) == log
