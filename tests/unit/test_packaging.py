"""docker-compose.airflow.yml, the Dockerfile and packages.txt, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.airflow.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _pinned(name: str) -> str:
    (line,) = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.startswith(f"{name}==")]
    return line.split("==")[1]


def _airflow_env(compose: dict) -> dict[str, str]:
    return compose["x-airflow-common"]["environment"]


def test_the_compose_file_has_the_official_services_and_mlflow(compose):
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "mlflow",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-init",
    }
    commands = {name: s.get("command") for name, s in compose["services"].items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-worker"] == "celery worker"
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker"):
        deps = compose["services"][service]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", service


def test_every_image_is_pinned_and_airflow_matches_requirements(compose):
    airflow = _pinned("apache-airflow")
    images = {name: s.get("image") or compose["x-airflow-common"]["image"] for name, s in compose["services"].items()}
    for name, image in images.items():
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: image {image!r} is not pinned"
    assert compose["x-airflow-common"]["image"] == f"nightshift-airflow:{airflow}"
    (base,) = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert base == f"apache/airflow:{airflow}-python3.11", "the Dockerfile's Airflow must be requirements.txt's"


def test_celery_executor_with_redis_broker_and_postgres_result_backend(compose):
    env = _airflow_env(compose)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert "providers-celery" in (ROOT / "requirements.txt").read_text()


def test_the_ui_needs_a_login_and_no_secret_is_written_in_the_file(compose):
    env = _airflow_env(compose)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", env[key]), f"{key} must come from .env, not the file"
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    example = dict(
        ln.split("=", 1) for ln in (ROOT / ".env.example").read_text().splitlines() if ln and not ln.startswith("#")
    )
    assert all(v == "" for k, v in example.items() if k != "AIRFLOW_UID"), "the example must not carry secrets"


def test_the_settings_file_gets_every_variable_it_needs(compose):
    """Every ${VAR} of airflow_settings.yaml is set for airflow-init, which applies it: the defaults
    are the embedded stack's (127.0.0.1), wrong inside compose."""
    settings = yaml.safe_dump(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text()))
    used = set(re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", settings))
    env = _airflow_env(compose)
    missing = sorted(v for v in used if v not in env)
    assert missing == [], f"docker-compose.airflow.yml does not set {missing} for airflow_settings.yaml"
    assert env["NIGHTSHIFT_PG_HOST"] == "postgres" and env["NIGHTSHIFT_MLFLOW_HOST"] == "mlflow"
    init = compose["services"]["airflow-init"]["command"][-1]
    assert "scripts/airflow_settings.py /opt/airflow/airflow_settings.yaml" in init
    assert "airflow db migrate" in init


def test_the_init_jobs_python_compiles_and_the_databases_are_created(compose):
    init = compose["services"]["airflow-init"]["command"][-1]
    body = init.split("<<'PY'\n", 1)[1].split("\nPY", 1)[0]
    compile(textwrap.dedent(body), "airflow-init", "exec")
    sql = (ROOT / "docker" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow;" in sql and "CREATE DATABASE nightshift_warehouse;" in sql
    assert "postgres/mlflow" in " ".join(compose["services"]["mlflow"]["command"])


def test_packages_txt_lists_debian_package_names():
    names = [ln.strip() for ln in (ROOT / "packages.txt").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert names and all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", n) for n in names), names
    assert "libpq5" in names
    docker = (ROOT / "Dockerfile").read_text()
    assert "packages.txt" in docker and "requirements.txt" in docker and "constraints.txt" in docker


def test_postgres_asks_for_passwords_and_the_dags_write_as_the_writer(compose):
    pg = compose["services"]["postgres"]["environment"]
    assert pg["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth-host=scram-sha-256" in pg["POSTGRES_INITDB_ARGS"]
    assert "--auth-local=scram-sha-256" in pg["POSTGRES_INITDB_ARGS"]
    env = _airflow_env(compose)
    assert env["NIGHTSHIFT_PG_USER"] == "nightshift_writer"
    assert re.fullmatch(r"\$\{WRITER_PASSWORD:\?[^}]+\}", env["NIGHTSHIFT_PG_PASSWORD"])
    init = compose["services"]["airflow-init"]["command"][-1]
    assert 'ensure_writer_role(admin, "nightshift_writer"' in init and "ensure_analyst_login(admin" in init
    assert 'user="nightshift_writer"' in init, "the tables are created by the writer, who owns them"
    example = (ROOT / ".env.example").read_text().splitlines()
    assert "WRITER_PASSWORD=" in example and "ANALYST_PASSWORD=" in example


def test_the_mlflow_client_is_bounded_everywhere_the_stack_runs_airflow(compose):
    from scripts.stack.settings import MLFLOW_CLIENT_ENV

    assert MLFLOW_CLIENT_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    env = _airflow_env(compose)
    docker = (ROOT / "Dockerfile").read_text()
    for key, value in MLFLOW_CLIENT_ENV.items():
        assert env[key] == value, f"compose sets {key}={env.get(key)!r}, scripts/stack {value!r}"
        assert re.search(rf"\b{key}={value}\b", docker), f"the Dockerfile does not set {key}={value}"


def test_mlflow_needs_a_login_and_listens_on_loopback_only(compose):
    mlflow = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    assert mlflow["ports"] == ["127.0.0.1:5000:5000"]
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/opt/mlflow/auth.ini"
    assert re.fullmatch(r"\$\{MLFLOW_ADMIN_PASSWORD:\?[^}]+\}", mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert "./docker/mlflow-auth.ini:/opt/mlflow/auth.ini:ro" in mlflow["volumes"]
    assert mlflow["environment"]["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_SECRET_KEY:?")
    ini = (ROOT / "docker" / "mlflow-auth.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M), "no password in the auth config"
    env = _airflow_env(compose)
    assert env["NIGHTSHIFT_MLFLOW_USER"] == "nightshift"
    assert re.fullmatch(r"\$\{MLFLOW_PASSWORD:\?[^}]+\}", env["NIGHTSHIFT_MLFLOW_PASSWORD"])
    settings = (ROOT / "airflow_settings.yaml").read_text()
    assert "conn_login: ${NIGHTSHIFT_MLFLOW_USER:-}" in settings
    assert "conn_password: ${NIGHTSHIFT_MLFLOW_PASSWORD:-}" in settings
    assert "ensure_login(" in compose["services"]["airflow-init"]["command"][-1]


def test_no_password_literal_in_the_compose_file():
    """Every password, secret and key in compose comes from .env (``${VAR:?...}``), in URLs too."""
    text = COMPOSE.read_text()
    settings = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    for line in settings:
        m = re.match(r"\s*(\w*(?:PASSWORD|SECRET|_KEY)\w*)\s*:\s*(.+)$", line)
        if m and m.group(1).endswith(("_FILE", "_PATH")):
            continue  # where a secret is kept, not the secret
        if m:
            assert m.group(2).strip().startswith("${"), f"a literal secret in compose: {m.group(1)}"
        for password in re.findall(r"://[^:/@\s]+:([^@\s]*)@", line):
            assert password.startswith("${") or password == "", f"a password literal in a URL: {line.strip()}"
