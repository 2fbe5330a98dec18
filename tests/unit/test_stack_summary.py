"""What `make run` prints at the end: the decision on success, the failed task and its error otherwise."""

from __future__ import annotations

import pytest

from scripts.stack.settings import Stack
from scripts.stack.summary import print_summary

pytestmark = pytest.mark.unit


@pytest.fixture
def stack(tmp_path) -> Stack:
    return Stack(home=tmp_path, airflow_port=18080, mlflow_port=15000)


def test_success_summary_names_version_alias_gate_and_where_to_look(stack, capsys):
    summary = {
        "model_version": "2",
        "aliases": ["challenger", "champion"],
        "champion_version": "2",
        "gate_summary": "gate passed: roc_auc 0.79 >= floor 0.7",
        "mlflow_run_url": "http://x/#/runs/1",
    }
    print_summary(stack, "churn_training", "manual__1", "success", summary, {})
    out = capsys.readouterr().out

    assert "state           success" in out
    assert "model version   churn v2  aliases: challenger, champion" in out
    assert "gate            gate passed: roc_auc 0.79 >= floor 0.7" in out
    assert "@champion       churn v2" in out
    assert "http://127.0.0.1:18080   login: admin" in out
    assert f"password: key admin_password in {stack.secrets_file}" in out
    assert "FAILED" not in out


def test_failure_summary_shows_each_failed_task_with_its_error(stack, capsys):
    error = "GX suite churn_raw_features failed 1 of 31 expectations on 56000 rows:\n  - expect_column_values..."
    print_summary(stack, "churn_training", "manual__1", "failed", {}, {"validate_raw_features": error})
    out = capsys.readouterr().out

    assert "state           failed" in out
    assert "FAILED          validate_raw_features: GX suite churn_raw_features failed 1 of 31" in out
    assert "                   - expect_column_values..." in out
    assert "docs/runbook.md" in out
    assert "model version   -" in out and "@champion       none" in out


def test_reading_settings_and_printing_summaries_write_nothing(tmp_path, capsys):
    """Functions that report never act: no secrets file, no database, no directory appears."""
    from datetime import date

    from scripts.stack.summary import print_monitoring_summary, print_scoring_summary

    home = tmp_path / "home"
    stack = Stack(home=home, airflow_port=18080, mlflow_port=15000)
    assert stack.secrets() == {}
    day = date(2026, 11, 20)
    facts = {
        "schema": "nightshift",
        "rows": {day.isoformat(): 2000},
        "quarantined": {day.isoformat(): 0},
        "analyst_query": "SELECT 1",
        "analyst_rows": [(1,)],
        "psql_url": "postgresql://analyst@127.0.0.1:5432/nightshift_warehouse",
    }
    print_scoring_summary(stack, "churn_scoring", {day: "success"}, facts, {})
    print_monitoring_summary(stack, [day], {"drift": {}, "performance": []}, 600)
    print_summary(stack, "churn_training", "manual__1", "success", {}, {})
    out = capsys.readouterr().out
    assert "2,000 rows in nightshift.churn_scores" in out
    assert "psql 'postgresql://analyst@127.0.0.1:5432/nightshift_warehouse'" in out
    assert not home.exists(), "a summary created the stack's home"


def test_no_summary_prints_a_secret_only_where_it_is(tmp_path, capsys):
    """`make run`'s output ends up in CI logs and scrollback: it names the secrets file and key, never a value."""
    from datetime import date

    from scripts.stack.settings import ensure_secrets
    from scripts.stack.summary import print_monitoring_summary, print_scoring_summary, print_up

    stack = Stack(home=tmp_path, airflow_port=18080, mlflow_port=15000)
    secrets = ensure_secrets(stack)
    assert {"admin_password", "analyst_password", "postgres_password", "writer_password"} <= set(secrets)
    day = date(2026, 11, 20)
    facts = {
        "schema": "nightshift",
        "rows": {day.isoformat(): 10},
        "quarantined": {day.isoformat(): 0},
        "analyst_query": "SELECT 1",
        "analyst_rows": [(1,)],
        "psql_url": "postgresql://analyst@127.0.0.1:5432/nightshift_warehouse",
    }
    print_summary(stack, "churn_training", "manual__1", "success", {"model_version": "1"}, {})
    print_scoring_summary(stack, "churn_scoring", {day: "success"}, facts, {})
    print_monitoring_summary(stack, [day], {"drift": {}, "performance": []}, 600)
    print_up(stack)
    out = capsys.readouterr().out
    leaked = [k for k, v in secrets.items() if v in out]
    assert leaked == [], f"the summary prints the secret(s) {leaked}"
    assert f"key admin_password in {stack.secrets_file}" in out
    assert f"key analyst_password in {stack.secrets_file}" in out


@pytest.mark.parametrize("name", ["churn", "customer_spend", "next_offer"])
def test_the_analyst_query_of_make_run_names_each_models_own_key_and_outputs(name):
    """`NIGHTSHIFT_MODEL=customer_spend make run` once failed here: it asked a regression table for `score`."""
    from include.nightshift.spec import load_model
    from include.nightshift.warehouse import Tables
    from scripts.stack.demo import RANK_COLUMN, analyst_query

    spec = load_model(name)
    query = analyst_query(spec)

    outputs = [c[0] for c in Tables.for_spec(spec).output_columns]
    assert RANK_COLUMN[spec.target.type] in outputs
    assert query.startswith(f"SELECT {spec.entity_key}, round({RANK_COLUMN[spec.target.type]}::numeric, 3)")
    assert f"FROM {spec.scoring.schema_name}.{name}_latest_scores" in query


def test_the_realised_line_shows_each_target_types_own_metrics():
    """`make run` of a regression model once stopped here, formatting its missing roc_auc."""
    from scripts.stack.summary import realised

    none = dict.fromkeys(("roc_auc", "precision", "recall", "calibration_error", "holdout_roc_auc"))
    binary = {**none, "labelled_rows": 2000, "target_type": "binary", "roc_auc": 0.81, "holdout_roc_auc": 0.8}
    binary.update(precision=0.5, recall=0.4, calibration_error=0.02, holdout={})
    regression = {**none, "labelled_rows": 2000, "target_type": "regression", "rmse": 8.77, "mae": 6.87, "r2": 0.83}
    regression["holdout"] = {"rmse": 8.5, "mae": 6.5}

    assert realised(binary) == (
        "realised on 2,000 labels: roc_auc 0.810 (holdout 0.800), precision 0.500, recall 0.400, "
        "calibration error 0.020"
    )
    assert realised(regression) == (
        "realised on 2,000 labels: rmse 8.770 (holdout 8.500), mae 6.870 (holdout 6.500), r2 0.830 (holdout n/a)"
    )
