"""The Airflow and MLflow services of the embedded stack: their environment, ``up`` and ``down``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.parse

from scripts.stack import postgres
from scripts.stack.processes import port_open, service_pid, start_service, stop_service, wait_http
from scripts.stack.settings import (
    AIRFLOW_SERVICES,
    MLFLOW_CLIENT_ENV,
    PRELOAD_ENV,
    ROOT,
    VENV_BIN,
    Stack,
    StackError,
    ensure_secrets,
    write_private,
)

log = logging.getLogger("nightshift.stack")

# Airflow 3's built-in auth manager: a login page and JWTs for the REST API. Production: see README.
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def base_env() -> dict[str, str]:
    """The process environment without Airflow settings, with our code importable and no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # no phoning home from the platform's libraries
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "SCARF_ANALYTICS": "false",
        }
    )
    return env


def side_port(port: int, offset: int) -> int:
    """A port next to ``port`` (so that two stacks on one machine do not collide)."""
    return port + offset if port + offset <= 65535 else port - offset


def _airflow_core(stack: Stack, netloc: str, secrets: dict[str, str]) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(stack.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": stack.executor,
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": secrets.get("fernet_key", ""),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{stack.airflow_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(stack.airflow_home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{netloc}/{stack.db('airflow')}",
        "AIRFLOW__API__BASE_URL": stack.airflow_url,
        "AIRFLOW__API__PORT": str(stack.airflow_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.get("api_secret_key", ""),
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.get("jwt_secret", ""),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(side_port(stack.airflow_port, 713)),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(side_port(stack.airflow_port, 714)),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    }


def _nightshift_settings(stack: Stack, server: str, secrets: dict[str, str]) -> dict[str, str]:
    """What ``airflow_settings.yaml`` reads (connections and variables) and the MLflow client's URI.

    ``postgres_default`` is the writer login (``<prefix>_writer``), never the server's superuser.
    """
    p = urllib.parse.urlsplit(server)
    return {
        "NIGHTSHIFT_PG_HOST": p.hostname or "127.0.0.1",
        "NIGHTSHIFT_PG_PORT": str(p.port or 5432),
        "NIGHTSHIFT_PG_USER": stack.writer_login,
        "NIGHTSHIFT_PG_PASSWORD": secrets.get("writer_password", ""),
        "NIGHTSHIFT_WAREHOUSE_DB": stack.db("warehouse"),
        "NIGHTSHIFT_MLFLOW_HOST": "127.0.0.1",
        "NIGHTSHIFT_MLFLOW_PORT": str(stack.mlflow_port),
        "NIGHTSHIFT_MLFLOW_UI_URL": stack.mlflow_url,
        "NIGHTSHIFT_LANDING_ROOT": stack.landing_root,
        "NIGHTSHIFT_WORK_ROOT": stack.work_root,
        "NIGHTSHIFT_REPORTS_ROOT": stack.reports_root,
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
    }


def openlineage_env(stack: Stack) -> dict[str, str]:
    """The OpenLineage provider's settings: events to ``NIGHTSHIFT_OPENLINEAGE_TRANSPORT`` (a transport
    as JSON, e.g. Marquez's HTTP endpoint, see README), by default a JSON-lines file in the stack home."""
    default = {"type": "file", "log_file_path": str(stack.openlineage_file), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__NAMESPACE": os.environ.get("NIGHTSHIFT_OPENLINEAGE_NAMESPACE", "nightshift"),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": os.environ.get("NIGHTSHIFT_OPENLINEAGE_TRANSPORT") or json.dumps(default),
    }


def airflow_env(stack: Stack, server: str, secrets: dict[str, str]) -> dict[str, str]:
    """The environment of every Airflow process of the stack (and of its CLI, see ``make env``)."""
    netloc = urllib.parse.urlsplit(server).netloc
    env = base_env()
    env.update(_airflow_core(stack, netloc, secrets))
    env.update(_nightshift_settings(stack, server, secrets))
    env.update(MLFLOW_CLIENT_ENV)
    env.update(PRELOAD_ENV[stack.executor])
    env.update(openlineage_env(stack))
    # The tasks' Execution API token lifetime (Airflow's default when unset); the e2e stack shortens it
    # to show that a task outliving its token still finishes.
    if os.environ.get("NIGHTSHIFT_EXECUTION_TOKEN_SECONDS"):
        env["AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME"] = os.environ["NIGHTSHIFT_EXECUTION_TOKEN_SECONDS"]
    if stack.executor == "CeleryExecutor":
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": stack.redis_url,
                # Results in the Airflow metadata database (Postgres), not in the broker.
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{netloc}/{stack.db('airflow')}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(stack.celery_concurrency),
            }
        )
    return env


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def redis_plan(url: str, answers: bool, binary: str | None) -> str:
    """What to do for the Celery broker: ``use`` the Redis that answers, ``start`` a project-local one.

    Raises:
        StackError: none answers and none can be started here; names what to install or set.
    """
    if answers:
        return "use"
    where = postgres.redact(url)
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise StackError(f"CeleryExecutor needs Redis as its broker, and none answers at {where}: start it there")
    if binary is None:
        raise StackError(
            f"CeleryExecutor needs Redis as its broker, none answers at {where} and redis-server is not "
            "installed: install it (e.g. apt-get install redis-server), start one, or set NIGHTSHIFT_REDIS_URL"
        )
    return "start"


def ensure_redis(stack: Stack) -> None:
    """For CeleryExecutor: the Redis at NIGHTSHIFT_REDIS_URL, or a project-local one started on its port."""
    import shutil
    import time

    if stack.executor != "CeleryExecutor":
        return
    if redis_plan(stack.redis_url, redis_answers(stack.redis_url), shutil.which("redis-server")) == "use":
        return
    port = urllib.parse.urlsplit(stack.redis_url).port or 6379
    data = stack.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log.info("no Redis answers at %s: starting a project-local one", postgres.redact(stack.redis_url))
    cmd = [str(shutil.which("redis-server")), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
    start_service(stack, "redis", [*cmd, "--save", "", "--appendonly", "no", "--protected-mode", "yes"], base_env())
    deadline = time.monotonic() + 30
    while not redis_answers(stack.redis_url):
        if time.monotonic() > deadline or service_pid(stack, "redis") is None:
            raise StackError(f"the project-local Redis did not start on port {port}; see {stack.log_dir / 'redis.log'}")
        time.sleep(0.5)


def start_celery_workers(stack: Stack, env: dict[str, str]) -> None:
    """The Celery workers, each with its own name and log-server port (they share this machine)."""
    if not stack.worker_names:
        return
    ensure_redis(stack)
    for i, name in enumerate(stack.worker_names, start=1):
        worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(side_port(stack.airflow_port, 720 + i))}
        cmd = [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h"]
        start_service(stack, name, cmd, worker_env)


def start_mlflow(stack: Stack, server: str) -> None:
    """The MLflow tracking server and registry (Postgres backend store, artifacts served through it)."""
    if service_pid(stack, "mlflow") is None and port_open(stack.mlflow_port):
        raise StackError(f"port {stack.mlflow_port} is taken by another program; set NIGHTSHIFT_MLFLOW_PORT")
    artifacts = stack.home / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"{server}/{stack.db('mlflow')}",
        "--artifacts-destination",
        os.environ.get("NIGHTSHIFT_ARTIFACTS_URI", artifacts.as_uri()),
        "--host",
        "127.0.0.1",
        "--port",
        str(stack.mlflow_port),
        "--workers",
        "1",
    ]
    # The job runner is for MLflow's GenAI jobs; not needed here and ~240 MB of memory.
    start_service(stack, "mlflow", cmd, {**base_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    wait_http(
        f"{stack.mlflow_url}/health",
        "MLflow server",
        120,
        stack.log_dir / "mlflow.log",
        lambda: service_pid(stack, "mlflow") is not None,
    )


def airflow_cli(env: dict[str, str], *args: str, what: str) -> None:
    res = subprocess.run([str(VENV_BIN / "airflow"), *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        raise StackError(f"{what} failed (airflow {' '.join(args)}):\n{tail}")


def prepare_airflow(stack: Stack, env: dict[str, str], admin_password: str) -> None:
    """Migrate the metadata DB, apply airflow_settings.yaml and write the login."""
    stack.openlineage_file.parent.mkdir(parents=True, exist_ok=True)  # the file transport's directory
    log.info("migrating the Airflow metadata database")
    airflow_cli(env, "db", "migrate", what="Airflow metadata migration")
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "airflow_settings.py"), str(ROOT / "airflow_settings.yaml")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise StackError(f"applying airflow_settings.yaml failed:\n{res.stderr.strip()[-2000:]}")
    log.info("%s", res.stdout.strip())
    # The SimpleAuthManager's password file, pre-written so that the login is ours, not a generated one.
    write_private(stack.airflow_home / "passwords.json", json.dumps({"admin": admin_password}))


def start_airflow(stack: Stack, env: dict[str, str], admin_password: str) -> None:
    running = [n for n in stack.services if service_pid(stack, n)]
    if "api-server" not in running and port_open(stack.airflow_port):
        raise StackError(f"port {stack.airflow_port} is taken by another program; set NIGHTSHIFT_AIRFLOW_PORT")
    prepare_airflow(stack, env, admin_password)
    for name in AIRFLOW_SERVICES:
        start_service(stack, name, [str(VENV_BIN / "airflow"), name], env)
    start_celery_workers(stack, env)
    wait_http(
        f"{stack.airflow_url}/api/v2/monitor/health",
        "Airflow API server",
        180,
        stack.log_dir / "api-server.log",
        lambda: service_pid(stack, "api-server") is not None,
    )


def _shq(v: str) -> str:
    return "'" + v.replace("'", "'\\''") + "'"


def up(stack: Stack) -> str:
    """Bring PostgreSQL, MLflow and Airflow up (what is already running is reused); returns the server URL."""
    secrets = ensure_secrets(stack)
    ensure_redis(stack)  # CeleryExecutor: before anything starts, so that a missing Redis stops us at once
    server = postgres.ensure_postgres(stack)
    postgres.ensure_databases(server, [stack.db("airflow"), stack.db("mlflow"), stack.db("warehouse")])
    postgres.ensure_writer(stack, server)
    start_mlflow(stack, server)
    env = airflow_env(stack, server, secrets)
    start_airflow(stack, env, secrets["admin_password"])
    # Holds the Fernet key and JWT secret: private, like secrets.json.
    exported = sorted((k, v) for k, v in env.items() if k.startswith(("AIRFLOW", "NIGHTSHIFT", "MLFLOW", "PYTHONPATH")))
    write_private(stack.home / "env.sh", "".join(f"export {k}={_shq(v)}\n" for k, v in exported))
    return server


def down(stack: Stack) -> None:
    """Stop every service this stack started, and its project-local PostgreSQL."""
    workers = sorted(p.stem for p in stack.run_dir.glob("celery-worker-*.pid")) if stack.run_dir.exists() else []
    for name in (*workers, *reversed(AIRFLOW_SERVICES), "mlflow", "redis"):
        stop_service(stack, name)
    postgres.stop_local_postgres(stack)
