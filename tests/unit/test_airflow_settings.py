"""scripts/airflow_settings.py: ${VAR} expansion and the project's settings file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import airflow_settings

pytestmark = pytest.mark.unit

SETTINGS = Path(__file__).resolve().parents[2] / "airflow_settings.yaml"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("NS_HOST", "db.internal")
    monkeypatch.setenv("NS_EMPTY", "")
    monkeypatch.delenv("NS_UNSET", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("${NS_HOST}", "db.internal", id="set"),
        pytest.param("${NS_HOST:-fallback}", "db.internal", id="set-wins-over-default"),
        pytest.param("${NS_UNSET:-fallback}", "fallback", id="default"),
        pytest.param("${NS_UNSET:-}", "", id="empty-default"),
        pytest.param("${NS_UNSET:-http://127.0.0.1:5000}", "http://127.0.0.1:5000", id="default-with-colons"),
        pytest.param("${NS_EMPTY:-fallback}", "", id="set-but-empty-is-kept"),
        pytest.param("postgres://${NS_HOST}:${NS_UNSET:-5432}/db", "postgres://db.internal:5432/db", id="embedded"),
        pytest.param("no variables", "no variables", id="plain"),
        pytest.param("$NS_HOST", "$NS_HOST", id="bare-dollar-untouched"),
        pytest.param(5432, 5432, id="int-untouched"),
        pytest.param(None, None, id="none-untouched"),
        pytest.param(True, True, id="bool-untouched"),
    ],
)
def test_expand_scalars(env, value, expected):
    assert airflow_settings.expand(value, "x") == expected


def test_expand_nested(env):
    value = {
        "conn_host": "${NS_HOST}",
        "conn_extra": {"ui_url": "http://${NS_HOST}:${NS_UNSET:-5000}", "verify": False},
        "hosts": ["${NS_HOST}", "${NS_UNSET:-b}", 3],
    }
    assert airflow_settings.expand(value, "airflow.connections[0]") == {
        "conn_host": "db.internal",
        "conn_extra": {"ui_url": "http://db.internal:5000", "verify": False},
        "hosts": ["db.internal", "b", 3],
    }


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param("${NS_UNSET}", "airflow.variables[0]", id="top-level"),
        pytest.param({"conn_extra": {"token": "${NS_UNSET}"}}, "airflow.connections[1].conn_extra.token", id="in-dict"),
        pytest.param({"hosts": ["ok", "${NS_UNSET}"]}, "airflow.connections[1].hosts[1]", id="in-list"),
    ],
)
def test_missing_variable_without_default_names_key_path_and_variable(env, value, where):
    base = "airflow.variables[0]" if isinstance(value, str) else "airflow.connections[1]"
    with pytest.raises(SystemExit) as exc:
        airflow_settings.expand(value, base)
    message = str(exc.value.code)
    assert f"{where} uses ${{NS_UNSET}}" in message
    assert "NS_UNSET is not set" in message


def test_load_project_settings_with_environment(monkeypatch):
    monkeypatch.setenv("NIGHTSHIFT_PG_HOST", "pg.example")
    monkeypatch.setenv("NIGHTSHIFT_PG_PORT", "6543")
    monkeypatch.delenv("NIGHTSHIFT_WAREHOUSE_DB", raising=False)
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_PORT", "5055")
    monkeypatch.delenv("NIGHTSHIFT_MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("NIGHTSHIFT_LANDING_ROOT", "s3://lake/landing")
    monkeypatch.setenv("NIGHTSHIFT_WORK_ROOT", "file:///srv/work")
    monkeypatch.setenv("NIGHTSHIFT_REPORTS_ROOT", "s3://lake/reports")

    settings = airflow_settings.load(SETTINGS)

    connections = {c["conn_id"]: c for c in settings["connections"]}
    assert set(connections) == {"postgres_default", "mlflow_default"}
    pg = connections["postgres_default"]
    assert (pg["conn_type"], pg["conn_host"], pg["conn_port"]) == ("postgres", "pg.example", "6543")
    assert pg["conn_schema"] == "nightshift_warehouse"  # the default
    mlflow = connections["mlflow_default"]
    assert (mlflow["conn_type"], mlflow["conn_port"]) == ("http", "5055")
    assert mlflow["conn_extra"] == {"ui_url": "http://127.0.0.1:5000"}

    variables = {v["variable_name"]: v["variable_value"] for v in settings["variables"]}
    assert variables == {
        "nightshift_landing_root": "s3://lake/landing",
        "nightshift_work_root": "file:///srv/work",
        "nightshift_reports_root": "s3://lake/reports",
    }
    assert [p["pool_name"] for p in settings["pools"]] == ["nightshift_training", "nightshift_scoring"]


def test_load_project_settings_with_only_defaults(monkeypatch):
    for name in (
        "NIGHTSHIFT_PG_HOST",
        "NIGHTSHIFT_PG_PASSWORD",
        "NIGHTSHIFT_LANDING_ROOT",
        "NIGHTSHIFT_WORK_ROOT",
    ):
        monkeypatch.delenv(name, raising=False)

    settings = airflow_settings.load(SETTINGS)

    pg = next(c for c in settings["connections"] if c["conn_id"] == "postgres_default")
    assert pg["conn_host"] == "127.0.0.1"
    assert pg["conn_password"] == ""  # no secret in the repo
    variables = {v["variable_name"]: v["variable_value"] for v in settings["variables"]}
    assert variables["nightshift_landing_root"] == "file:///usr/local/airflow/data/landing"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", {"connections": [], "variables": [], "pools": []}, id="empty-file"),
        pytest.param("airflow:\n  pools:\n", {"connections": [], "variables": [], "pools": []}, id="empty-sections"),
        pytest.param(
            "airflow:\n  variables:\n    - {variable_name: a, variable_value: '${NS_UNSET:-1}'}\n",
            {"connections": [], "variables": [{"variable_name": "a", "variable_value": "1"}], "pools": []},
            id="only-variables",
        ),
    ],
)
def test_load_tolerates_missing_sections(env, tmp_path, text, expected):
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(text)
    assert airflow_settings.load(path) == expected


def test_load_names_the_entry_with_a_missing_variable(env, tmp_path):
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(
        "airflow:\n  connections:\n    - {conn_id: a, conn_type: http}\n"
        "    - {conn_id: b, conn_type: http, conn_password: '${NS_UNSET}'}\n"
    )
    with pytest.raises(SystemExit, match=r"airflow\.connections\[1\]\.conn_password uses \$\{NS_UNSET\}"):
        airflow_settings.load(path)
