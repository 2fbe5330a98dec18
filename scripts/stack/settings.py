"""The embedded stack's settings (from the environment) and its secrets file.

Settings (environment): NIGHTSHIFT_HOME (state, default .local), NIGHTSHIFT_DB_URL (a Postgres server
to use, e.g. postgresql://postgres@127.0.0.1:5432), NIGHTSHIFT_PG_PORT (where to look for or start
Postgres when no URL is given, default 5432), NIGHTSHIFT_DB_PREFIX (database names, default
nightshift), NIGHTSHIFT_AIRFLOW_PORT (8080), NIGHTSHIFT_MLFLOW_PORT (5000), NIGHTSHIFT_MODEL (churn),
NIGHTSHIFT_EXECUTOR (LocalExecutor or CeleryExecutor) and, for Celery, NIGHTSHIFT_REDIS_URL,
NIGHTSHIFT_CELERY_WORKERS and NIGHTSHIFT_CELERY_CONCURRENCY; NIGHTSHIFT_OPENLINEAGE_TRANSPORT (an
OpenLineage transport as JSON; default a file under the home) and NIGHTSHIFT_OPENLINEAGE_NAMESPACE;
NIGHTSHIFT_EXECUTION_TOKEN_SECONDS (the tasks' Execution API token lifetime; Airflow's default).

Secrets live in ``$NIGHTSHIFT_HOME/secrets.json`` (mode 0600), never in the repo. Reading them
(:func:`read_secrets`) never writes; :func:`ensure_secrets`, called when the stack comes up, creates
the missing ones.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

AIRFLOW_SERVICES = ("scheduler", "api-server", "dag-processor", "triggerer")

# The MLflow client in every Airflow process (and the Dockerfile and compose, checked by a test): a dead
# tracking server fails a try in seconds (MLflow's defaults retry for minutes), no progress bars in task
# logs, and MLflow leaves the logging configuration to Airflow.
MLFLOW_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_CONFIGURE_LOGGING": "false",
}
# The tasks' libraries (MLflow, Evidently, GX, scikit-learn) imported once per executor worker, not
# in every task process (plugins/nightshift_airflow/preload.py). LocalExecutor: its workers come from
# the scheduler's forkserver, which imports them ("airflow" first: it puts the plugins folder on
# sys.path). Celery: not yet. Its workers could import them through
# nightshift_airflow.celery_config.CELERY_CONFIG, but with preloaded workers a finished task's supervisor
# holds its slot up to 5 s longer ([workers] min_heartbeat_interval, docs/benchmarks.md), and with one
# slot per worker that sends a day's shards all to one worker; lowering the interval raced the
# approval step's deferral in the e2e tests.
PRELOAD_ENV: dict[str, dict[str, str]] = {
    "LocalExecutor": {
        "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "airflow,nightshift_airflow.preload",
    },
    "CeleryExecutor": {},
}
EXECUTORS = tuple(PRELOAD_ENV)


class StackError(RuntimeError):
    """A step of bringing the platform up failed; the message says which and where the log is."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass
class Stack:
    """Where the stack keeps its state and on which ports it listens."""

    home: Path = field(default_factory=lambda: Path(_env("NIGHTSHIFT_HOME", str(ROOT / ".local"))).resolve())
    db_url: str | None = field(default_factory=lambda: os.environ.get("NIGHTSHIFT_DB_URL"))
    pg_port: int = field(default_factory=lambda: int(_env("NIGHTSHIFT_PG_PORT", "5432")))
    db_prefix: str = field(default_factory=lambda: _env("NIGHTSHIFT_DB_PREFIX", "nightshift"))
    airflow_port: int = field(default_factory=lambda: int(_env("NIGHTSHIFT_AIRFLOW_PORT", "8080")))
    mlflow_port: int = field(default_factory=lambda: int(_env("NIGHTSHIFT_MLFLOW_PORT", "5000")))
    model: str = field(default_factory=lambda: _env("NIGHTSHIFT_MODEL", "churn"))
    executor: str = field(default_factory=lambda: _env("NIGHTSHIFT_EXECUTOR", "LocalExecutor"))
    # CeleryExecutor only: the Redis broker (one database number per stack keeps stacks apart) and workers.
    redis_url: str = field(default_factory=lambda: _env("NIGHTSHIFT_REDIS_URL", "redis://127.0.0.1:6379/0"))
    celery_workers: int = field(default_factory=lambda: int(_env("NIGHTSHIFT_CELERY_WORKERS", "2")))
    celery_concurrency: int = field(default_factory=lambda: int(_env("NIGHTSHIFT_CELERY_CONCURRENCY", "2")))

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise StackError(f"NIGHTSHIFT_EXECUTOR is {self.executor!r}; allowed: {', '.join(EXECUTORS)}")
        if not 1 <= self.celery_workers <= 8:
            raise StackError(f"NIGHTSHIFT_CELERY_WORKERS is {self.celery_workers}; allowed: 1 to 8")

    @property
    def worker_names(self) -> list[str]:
        """The Celery workers' service names (none with LocalExecutor)."""
        if self.executor != "CeleryExecutor":
            return []
        return [f"celery-worker-{i}" for i in range(1, self.celery_workers + 1)]

    @property
    def services(self) -> tuple[str, ...]:
        return (*AIRFLOW_SERVICES, *self.worker_names)

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

    @property
    def openlineage_file(self) -> Path:
        """Where the default (file) OpenLineage transport appends its events, one JSON per line."""
        return self.home / "openlineage" / "events.jsonl"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def landing_root(self) -> str:
        return os.environ.get("NIGHTSHIFT_LANDING_ROOT", (self.home / "data" / "landing").as_uri())

    @property
    def work_root(self) -> str:
        return os.environ.get("NIGHTSHIFT_WORK_ROOT", (self.home / "data" / "work").as_uri())

    @property
    def reports_root(self) -> str:
        return os.environ.get("NIGHTSHIFT_REPORTS_ROOT", (self.home / "data" / "reports").as_uri())

    @property
    def writer_login(self) -> str:
        """The PostgreSQL login every DAG writes as (roles are cluster-wide: one per database prefix)."""
        from include.nightshift.warehouse.roles import writer_login

        return writer_login(self.db_prefix)

    def db(self, purpose: str) -> str:
        return f"{self.db_prefix}_{purpose}"

    def secrets(self) -> dict[str, str]:
        """The stack's secrets as they are on disk (empty before the first ``up``); never writes."""
        return read_secrets(self)


def _secret_makers() -> dict[str, Callable[[], str]]:
    return {
        "fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "jwt_secret": lambda: secrets.token_urlsafe(32),
        "api_secret_key": lambda: secrets.token_urlsafe(32),
        "admin_password": lambda: os.environ.get("NIGHTSHIFT_ADMIN_PASSWORD") or secrets.token_urlsafe(12),
        "analyst_password": lambda: os.environ.get("NIGHTSHIFT_ANALYST_PASSWORD") or secrets.token_urlsafe(12),
        # The project-local cluster's superuser (scram-sha-256) and the login every DAG writes as.
        "postgres_password": lambda: secrets.token_urlsafe(24),
        "writer_password": lambda: secrets.token_urlsafe(24),
    }


def read_secrets(stack: Stack) -> dict[str, str]:
    """The secrets file's contents, or nothing when it does not exist yet."""
    path = stack.secrets_file
    return json.loads(path.read_text()) if path.exists() else {}


def ensure_secrets(stack: Stack) -> dict[str, str]:
    """Generate the secrets that are missing (once) into the private secrets file; return them all."""
    values = read_secrets(stack)
    missing = {k: make() for k, make in _secret_makers().items() if k not in values}
    if missing:
        values.update(missing)
        write_private(stack.secrets_file, json.dumps(values, indent=1))
    return values


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
