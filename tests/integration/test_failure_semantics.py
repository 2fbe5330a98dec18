"""Failure semantics with ``dag.test()``: a dead service is a retryable error naming it; a timeout stops a
task, leaves the published day as it was and alerts once (docs/runbook.md, "Retried or final")."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from tests.conftest import DATA_END, free_port
from tests.integration.helpers import query, run_dag
from tests.integration.test_scoring_dag import DAY, day_rows, models_dir, scorer  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def test_mlflow_down_fails_a_try_in_seconds_with_a_retryable_error_naming_it(scorer, monkeypatch):  # noqa: F811
    from nightshift_airflow.factory import scoring_dag

    dead = free_port()  # nothing listens there
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": dead, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    started = time.monotonic()
    result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})
    seconds = time.monotonic() - started
    print(f"\nMLflow unreachable: the scoring run failed after {seconds:.1f} s")  # noqa: T201 - reported, not asserted

    assert result.tasks["resolve_run"] == "failed"
    assert result.error_types["resolve_run"] == "ServiceUnavailableError", "retryable, not AirflowFailException"
    error = result.errors["resolve_run"]
    assert error.startswith(f"MLflow at http://127.0.0.1:{dead} is unreachable")
    assert "Check that the MLflow tracking server answers" in error and "'mlflow_default'" in error
    assert "The task is retried" in error


def test_a_timed_out_shard_leaves_the_day_as_it_was_and_alerts_once(scorer, landing, warehouse, monkeypatch):  # noqa: F811
    from include.nightshift import scoring
    from nightshift_airflow.factory import scoring_dag

    assert run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()}).state == "success"
    before = day_rows(warehouse, "scorer", DAY)
    real = scoring.score_shard

    def slow(*args, **kwargs):
        time.sleep(60)  # stopped by the task's execution_timeout long before
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_shard", slow)
    dag = scoring_dag(scorer)
    dag.get_task("score").execution_timeout = timedelta(seconds=3)
    result = run_dag(dag, DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "failed" and result.failed_task() == "score"
    assert result.error_types["score"] == "AirflowTaskTimeout"
    assert day_rows(warehouse, "scorer", DAY) == before, "the published day is unchanged"
    alerts = query(
        warehouse,
        "SELECT task_id, error FROM monitoring.alerts WHERE dag_id = 'scorer_scoring' AND kind = 'task_failure' "
        "AND error LIKE %s",
        ("score timed out after 0.05 min%",),
    )
    assert len(alerts) == 1, alerts
    assert "runs.timeout_minutes.score" in alerts[0][1] and "clear the task" in alerts[0][1]

    monkeypatch.setattr(scoring, "score_shard", real)
    again = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})
    assert again.state == "success", "the timed-out run's lease is taken over"
