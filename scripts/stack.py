"""Bring the embedded Nightshift platform up, run its main job, and take it down.

    python scripts/stack.py up       # Postgres, MLflow server, Airflow (scheduler, API server, ...)
    python scripts/stack.py run      # up, sample data, trigger <model>_training over the REST API, wait
    python scripts/stack.py down     # stop what `up` started
    python scripts/stack.py logs     # where the logs are
    python scripts/stack.py env      # shell exports for the Airflow CLI against this stack

Settings (environment): NIGHTSHIFT_HOME (state, default .local), NIGHTSHIFT_DB_URL (a Postgres server
to use, e.g. postgresql://postgres@127.0.0.1:5432), NIGHTSHIFT_PG_PORT (where to look for or start
Postgres when no URL is given, default 5432), NIGHTSHIFT_DB_PREFIX (database names, default
nightshift), NIGHTSHIFT_AIRFLOW_PORT (8080), NIGHTSHIFT_MLFLOW_PORT (5000), NIGHTSHIFT_MODEL (churn).

Without NIGHTSHIFT_DB_URL, a server answering on 127.0.0.1:NIGHTSHIFT_PG_PORT is used; if none
answers, a project-local cluster is initialised under $NIGHTSHIFT_HOME/pg with the PostgreSQL binaries
and started on that port (as the unprivileged user `nightshift` when run as root).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
log = logging.getLogger("nightshift.stack")

AIRFLOW_SERVICES = ("scheduler", "api-server", "dag-processor", "triggerer")
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
TERMINAL = {"success", "failed"}
# Airflow 3's built-in auth manager: a login page and JWTs for the REST API. Production: see README.
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class StackError(RuntimeError):
    """A step of bringing the platform up failed; the message says which and where the log is."""


# --- configuration ----------------------------------------------------------------------------


@dataclass
class Stack:
    home: Path = field(default_factory=lambda: Path(os.environ.get("NIGHTSHIFT_HOME", ROOT / ".local")).resolve())
    db_url: str | None = field(default_factory=lambda: os.environ.get("NIGHTSHIFT_DB_URL"))
    pg_port: int = field(default_factory=lambda: int(os.environ.get("NIGHTSHIFT_PG_PORT", "5432")))
    db_prefix: str = field(default_factory=lambda: os.environ.get("NIGHTSHIFT_DB_PREFIX", "nightshift"))
    airflow_port: int = field(default_factory=lambda: int(os.environ.get("NIGHTSHIFT_AIRFLOW_PORT", "8080")))
    mlflow_port: int = field(default_factory=lambda: int(os.environ.get("NIGHTSHIFT_MLFLOW_PORT", "5000")))
    model: str = field(default_factory=lambda: os.environ.get("NIGHTSHIFT_MODEL", "churn"))
    executor: str = field(default_factory=lambda: os.environ.get("NIGHTSHIFT_EXECUTOR", "LocalExecutor"))
    # CeleryExecutor only: the Redis broker (one database number per stack keeps stacks apart) and workers.
    redis_url: str = field(default_factory=lambda: os.environ.get("NIGHTSHIFT_REDIS_URL", "redis://127.0.0.1:6379/0"))
    celery_workers: int = field(default_factory=lambda: int(os.environ.get("NIGHTSHIFT_CELERY_WORKERS", "2")))
    celery_concurrency: int = field(default_factory=lambda: int(os.environ.get("NIGHTSHIFT_CELERY_CONCURRENCY", "2")))

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

    def db(self, purpose: str) -> str:
        return f"{self.db_prefix}_{purpose}"

    # secrets live in $NIGHTSHIFT_HOME/secrets.json (mode 0600), never in the repo
    def secrets(self) -> dict[str, str]:
        path = self.home / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        wanted = {
            "fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "jwt_secret": lambda: secrets.token_urlsafe(32),
            "api_secret_key": lambda: secrets.token_urlsafe(32),
            "admin_password": lambda: os.environ.get("NIGHTSHIFT_ADMIN_PASSWORD") or secrets.token_urlsafe(12),
            "analyst_password": lambda: os.environ.get("NIGHTSHIFT_ANALYST_PASSWORD") or secrets.token_urlsafe(12),
        }
        missing = {k: make() for k, make in wanted.items() if k not in values}
        if missing:
            values.update(missing)
            self.home.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps(values, indent=1))
        return values


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if candidates:
        return str(candidates[-1])
    raise StackError(
        f"no PostgreSQL server answers and '{name}' is not installed: install the PostgreSQL "
        f"server package (e.g. apt-get install postgresql) or set NIGHTSHIFT_DB_URL"
    )


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: run its commands as the unprivileged user 'nightshift'."""
    if os.geteuid() != 0:
        return cmd
    if subprocess.run(["id", "-u", "nightshift"], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "nightshift"], check=True
        )
    return ["runuser", "-u", "nightshift", "--", *cmd]


def start_local_postgres(stack: Stack) -> str:
    """Initialise (once) and start a cluster under $NIGHTSHIFT_HOME/pg on NIGHTSHIFT_PG_PORT."""
    data, sock = stack.pg_dir / "data", stack.pg_dir / "run"
    sock.mkdir(parents=True, exist_ok=True)
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _as_pg_user(["true"])  # creates the user if needed
        shutil.chown(stack.pg_dir, "nightshift")
        shutil.chown(sock, "nightshift")
    if not (data / "PG_VERSION").exists():
        log.info("initialising a project-local PostgreSQL cluster in %s", data)
        cmd = [_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"]
        subprocess.run(_as_pg_user(cmd), check=True, capture_output=True)
    logfile = stack.pg_dir / "postgres.log"
    opts = f"-p {stack.pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock}"
    res = subprocess.run(
        _as_pg_user([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", opts, "-w", "-t", "60", "start"]),
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise StackError(
            f"project-local PostgreSQL did not start on port {stack.pg_port}: "
            f"{res.stderr.strip() or res.stdout.strip()} (log: {logfile})"
        )
    (stack.run_dir / "postgres.local").write_text(str(data))
    return f"postgresql://postgres@127.0.0.1:{stack.pg_port}"


def ensure_postgres(stack: Stack) -> str:
    """The server URL (no database): NIGHTSHIFT_DB_URL, a running server, or a project-local one."""
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    if stack.db_url:
        url = stack.db_url.rstrip("/")
        if not _pg_answers(f"{url}/postgres"):
            raise StackError(f"NIGHTSHIFT_DB_URL={_redact(url)} does not answer")
        return url
    url = f"postgresql://postgres@127.0.0.1:{stack.pg_port}"
    if _pg_answers(f"{url}/postgres"):
        log.info("using the PostgreSQL server on 127.0.0.1:%d", stack.pg_port)
        return url
    log.info("no PostgreSQL answers on 127.0.0.1:%d: starting a project-local one", stack.pg_port)
    return start_local_postgres(stack)


def ensure_databases(server_url: str, names: list[str], reset: bool = False) -> None:
    """Create the databases that do not exist; with ``reset``, drop and recreate them (tests)."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(f"{server_url}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in names:
            if reset:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("created database %s", name)
    conn.close()


def _redact(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    if p.password:
        return url.replace(f":{p.password}@", ":***@")
    return url


# --- processes --------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def service_pid(stack: Stack, name: str) -> int | None:
    pidfile = stack.run_dir / f"{name}.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().strip() or 0)
    return pid if pid and _pid_alive(pid) else None


def start_service(stack: Stack, name: str, cmd: list[str], env: dict[str, str]) -> int:
    pid = service_pid(stack, name)
    if pid:
        log.info("%s already running (pid %d)", name, pid)
        return pid
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    out = open(stack.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True
    )
    (stack.run_dir / f"{name}.pid").write_text(str(proc.pid))
    log.info("started %s (pid %d), log %s", name, proc.pid, stack.log_dir / f"{name}.log")
    return proc.pid


def stop_service(stack: Stack, name: str, timeout: float = 20.0) -> None:
    pid = service_pid(stack, name)
    pidfile = stack.run_dir / f"{name}.pid"
    if pid:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.2)
            if not _pid_alive(pid):
                break
        log.info("stopped %s", name)
    pidfile.unlink(missing_ok=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_http(url: str, what: str, timeout: float, logfile: Path, pid_check: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if pid_check is not None and not pid_check():
            raise StackError(f"{what} exited while starting; see {logfile}")
        time.sleep(1)
    raise StackError(f"{what} did not answer at {url} within {timeout:.0f}s; see {logfile}")


# --- Airflow and MLflow -----------------------------------------------------------------------


def base_env() -> dict[str, str]:
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


def airflow_env(stack: Stack, server_url: str) -> dict[str, str]:
    s = stack.secrets()
    p = urllib.parse.urlsplit(server_url)
    env = base_env()
    env.update(
        {
            "AIRFLOW_HOME": str(stack.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": stack.executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{stack.airflow_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(stack.airflow_home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{p.netloc}/{stack.db('airflow')}",
            "AIRFLOW__API__BASE_URL": stack.airflow_url,
            "AIRFLOW__API__PORT": str(stack.airflow_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": s["api_secret_key"],
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt_secret"],
            # next to the API port, so that two stacks on one machine do not collide
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_side_port(stack.airflow_port, 713)),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_side_port(stack.airflow_port, 714)),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            # read by airflow_settings.yaml
            "NIGHTSHIFT_PG_HOST": p.hostname or "127.0.0.1",
            "NIGHTSHIFT_PG_PORT": str(p.port or 5432),
            "NIGHTSHIFT_PG_USER": urllib.parse.unquote(p.username or "postgres"),
            "NIGHTSHIFT_PG_PASSWORD": urllib.parse.unquote(p.password or ""),
            "NIGHTSHIFT_WAREHOUSE_DB": stack.db("warehouse"),
            "NIGHTSHIFT_MLFLOW_HOST": "127.0.0.1",
            "NIGHTSHIFT_MLFLOW_PORT": str(stack.mlflow_port),
            "NIGHTSHIFT_MLFLOW_UI_URL": stack.mlflow_url,
            "NIGHTSHIFT_LANDING_ROOT": stack.landing_root,
            "NIGHTSHIFT_WORK_ROOT": stack.work_root,
            "NIGHTSHIFT_REPORTS_ROOT": stack.reports_root,
            "MLFLOW_TRACKING_URI": stack.mlflow_url,
        }
    )
    if stack.executor == "CeleryExecutor":
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": stack.redis_url,
                # Results in the Airflow metadata database (Postgres), not in the broker.
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{p.netloc}/{stack.db('airflow')}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(stack.celery_concurrency),
            }
        )
    return env


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def start_celery_workers(stack: Stack, env: dict[str, str]) -> None:
    """The Celery workers, each with its own name and log-server port (they share this machine)."""
    if not stack.worker_names:
        return
    if not _redis_answers(stack.redis_url):
        raise StackError(
            f"CeleryExecutor needs Redis as its broker, and none answers at {_redact(stack.redis_url)}: "
            "start one or set NIGHTSHIFT_REDIS_URL"
        )
    for i, name in enumerate(stack.worker_names, start=1):
        worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_side_port(stack.airflow_port, 720 + i))}
        cmd = [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h"]
        start_service(stack, name, cmd, worker_env)


def _side_port(port: int, offset: int) -> int:
    return port + offset if port + offset <= 65535 else port - offset


def write_passwords(stack: Stack) -> None:
    """Pre-write the SimpleAuthManager password file so the login is ours, not a generated one."""
    stack.airflow_home.mkdir(parents=True, exist_ok=True)
    path = stack.airflow_home / "passwords.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({"admin": stack.secrets()["admin_password"]}))


def start_mlflow(stack: Stack, server_url: str) -> None:
    if service_pid(stack, "mlflow") is None and _port_open(stack.mlflow_port):
        raise StackError(f"port {stack.mlflow_port} is taken by another program; set NIGHTSHIFT_MLFLOW_PORT")
    artifacts = stack.home / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"{server_url}/{stack.db('mlflow')}",
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


def prepare_airflow(stack: Stack, env: dict[str, str]) -> None:
    """Migrate the metadata DB, apply airflow_settings.yaml and write the login."""
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
    write_passwords(stack)


def start_airflow(stack: Stack, env: dict[str, str]) -> None:
    running = [n for n in stack.services if service_pid(stack, n)]
    if "api-server" not in running and _port_open(stack.airflow_port):
        raise StackError(f"port {stack.airflow_port} is taken by another program; set NIGHTSHIFT_AIRFLOW_PORT")
    prepare_airflow(stack, env)
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


def up(stack: Stack) -> dict[str, str]:
    server = ensure_postgres(stack)
    ensure_databases(server, [stack.db("airflow"), stack.db("mlflow"), stack.db("warehouse")])
    start_mlflow(stack, server)
    env = airflow_env(stack, server)
    start_airflow(stack, env)
    # Holds the Fernet key and JWT secret: private, like secrets.json.
    env_file = stack.home / "env.sh"
    env_file.touch(mode=0o600)
    env_file.chmod(0o600)
    exported = sorted((k, v) for k, v in env.items() if k.startswith(("AIRFLOW", "NIGHTSHIFT", "MLFLOW", "PYTHONPATH")))
    env_file.write_text("".join(f"export {k}={_shq(v)}\n" for k, v in exported))
    return env


def _shq(v: str) -> str:
    return "'" + v.replace("'", "'\\''") + "'"


def down(stack: Stack) -> None:
    workers = sorted(p.stem for p in stack.run_dir.glob("celery-worker-*.pid")) if stack.run_dir.exists() else []
    for name in (*workers, *reversed(AIRFLOW_SERVICES), "mlflow"):
        stop_service(stack, name)
    marker = stack.run_dir / "postgres.local"
    if marker.exists():
        data = marker.read_text().strip()
        subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]), capture_output=True)
        marker.unlink()
        log.info("stopped the project-local PostgreSQL")


# --- the REST API -----------------------------------------------------------------------------


class AirflowApi:
    """Just enough of Airflow's REST API v2 to trigger and follow a run, with a JWT login."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base = base_url.rstrip("/")
        self.username, self.password = username, password
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            body = self._raw("POST", "/auth/token", {"username": self.username, "password": self.password})
            self._token = body["access_token"]
        return self._token

    def _raw(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ApiError(exc.code, f"{method} {path} -> HTTP {exc.code}: {detail}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self._raw(method, path, body, {"Authorization": f"Bearer {self.token()}"})

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", f"/api/v2/dags/{dag_id}")
                return
            except ApiError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    errors = self.call("GET", "/api/v2/importErrors").get("import_errors", [])
                    raise StackError(f"DAG {dag_id} is not available: {exc}; import errors: {errors}") from None
            time.sleep(2)

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        logical_date: str | None = None,
        run_id: str | None = None,
    ) -> str:
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            run = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
            if run["state"] != last:
                log.info("%s %s: %s", dag_id, run_id, run["state"])
                last = run["state"]
            if run["state"] in TERMINAL:
                return run
            time.sleep(3)
        raise StackError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        res = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
        return res["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def failed_task_errors(self, dag_id: str, run_id: str) -> dict[str, str]:
        """The exception message of each failed task, read from its structured task log."""
        errors = {}
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] != "failed":
                continue
            path = (
                f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
                f"{ti['task_id']}/logs/{max(ti.get('try_number') or 1, 1)}"
            )
            events = self.call("GET", path).get("content") or []
            details = [d for e in events if isinstance(e, dict) for d in e.get("error_detail") or []]
            errors[ti["task_id"]] = details[0]["exc_value"] if details else "(no error in the task log)"
        return errors


class ApiError(StackError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def api_for(stack: Stack) -> AirflowApi:
    return AirflowApi(stack.airflow_url, "admin", stack.secrets()["admin_password"])


# --- the main job -----------------------------------------------------------------------------


def ensure_sample_data(stack: Stack, today: date, days: int = 42) -> None:
    """Write the sample data set for the `days` ending today, unless today's partition is there."""
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage

    spec = load_model(stack.model)
    if Storage().exists(spec.landing.features(stack.landing_root, today.isoformat())):
        return
    counts = generate(
        spec,
        stack.landing_root,
        SampleOptions(start=today - timedelta(days=days - 1), end=today, label_delay_days=spec.target.label_delay_days),
    )
    log.info("sample data: %(days)d days, %(feature_rows)d feature rows, %(label_rows)d label rows", counts)


def training_summary(stack: Stack, run_id: str) -> dict[str, Any]:
    """What the run decided, from the MLflow tracking server."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(stack.mlflow_url)
    out: dict[str, Any] = {}
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments(filter_string=f"name = 'nightshift-{stack.model}'")],
        filter_string=f"tags.`nightshift.airflow_run_id` = '{run_id}'",
    )
    if runs:
        tags = runs[0].data.tags
        out.update(
            {
                "mlflow_run_id": runs[0].info.run_id,
                "model_version": tags.get("nightshift.model_version"),
                "gate": tags.get("nightshift.gate"),
                "gate_summary": tags.get("nightshift.gate_summary"),
                "mlflow_run_url": f"{stack.mlflow_url}/#/experiments/{runs[0].info.experiment_id}/runs/"
                f"{runs[0].info.run_id}",
            }
        )
    try:
        champion = client.get_model_version_by_alias(stack.model, "champion")
        out["champion_version"] = champion.version
        mv_aliases = client.get_model_version(stack.model, out.get("model_version") or champion.version).aliases
        out["aliases"] = sorted(mv_aliases)
    except MlflowException:
        out["champion_version"] = None
    return out


SCORING_DAYS = 3  # `make run` scores the last three sample days, and the last day whose labels have landed
ANALYST_LOGIN = "analyst"
ANALYST_QUERY = (
    "SELECT customer_id, round(score::numeric, 3) AS score, score_date FROM {schema}.{model}_latest_scores "
    "ORDER BY score DESC, customer_id LIMIT 5"
)


def warehouse_url(stack: Stack, server_url: str, login: str | None = None, password: str | None = None) -> str:
    """The warehouse database URL, as the server's user or as ``login``."""
    parsed = urllib.parse.urlsplit(server_url)
    netloc = parsed.netloc
    if login:
        host = netloc.rsplit("@", 1)[-1]
        secret = f":{urllib.parse.quote(password, safe='')}" if password else ""
        netloc = f"{login}{secret}@{host}"
    return urllib.parse.urlunsplit((parsed.scheme, netloc, f"/{stack.db('warehouse')}", "", ""))


def ensure_analyst(stack: Stack, server_url: str) -> None:
    """The read-only role ``nightshift_analyst`` and a login ``analyst`` in it (password in secrets.json)."""
    import psycopg2

    sys.path[:0] = [str(ROOT)]
    from include.nightshift.spec import load_model
    from include.nightshift.warehouse import ensure_analyst_role

    conn = psycopg2.connect(warehouse_url(stack, server_url))
    try:
        ensure_analyst_role(conn, load_model(stack.model), ANALYST_LOGIN, stack.secrets()["analyst_password"])
    finally:
        conn.close()


def scoring_summary(stack: Stack, server_url: str, days: list[date]) -> dict[str, Any]:
    """Rows per scored day (as the writer) and one analyst query (as the analyst login)."""
    import psycopg2

    sys.path[:0] = [str(ROOT)]
    from include.nightshift.spec import load_model

    spec = load_model(stack.model)
    schema = spec.scoring.schema_name
    out: dict[str, Any] = {"schema": schema, "rows": {}, "quarantined": {}}
    conn = psycopg2.connect(warehouse_url(stack, server_url))
    try:
        with conn, conn.cursor() as cur:
            for day in days:
                cur.execute(f'SELECT count(*) FROM "{schema}"."{spec.name}_scores" WHERE score_date = %s', (day,))
                out["rows"][day.isoformat()] = cur.fetchone()[0]
                cur.execute(f'SELECT count(*) FROM "{schema}"."{spec.name}_quarantine" WHERE score_date = %s', (day,))
                out["quarantined"][day.isoformat()] = cur.fetchone()[0]
    finally:
        conn.close()
    query = ANALYST_QUERY.format(schema=schema, model=spec.name)
    conn = psycopg2.connect(warehouse_url(stack, server_url, ANALYST_LOGIN, stack.secrets()["analyst_password"]))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query)
            out["analyst_query"] = query
            out["analyst_rows"] = cur.fetchall()
    finally:
        conn.close()
    return out


def run(stack: Stack) -> int:
    up(stack)
    today = datetime.now(UTC).date()
    ensure_sample_data(stack, today)
    api = api_for(stack)
    dag_id = f"{stack.model}_training"
    api.wait_for_dag(dag_id)
    run_id = api.trigger(dag_id, logical_date=datetime.now(UTC).isoformat())
    log.info("triggered %s run %s over the REST API", dag_id, run_id)
    result = api.wait_for_run(dag_id, run_id)
    summary = training_summary(stack, run_id)
    errors = api.failed_task_errors(dag_id, run_id) if result["state"] != "success" else {}
    print_summary(stack, dag_id, run_id, result["state"], summary, errors)
    if result["state"] != "success" or not summary.get("champion_version"):
        return 1
    from include.nightshift.spec import load_model

    labelled = today - timedelta(days=load_model(stack.model).target.label_delay_days)
    days = [labelled] + [today - timedelta(days=i) for i in reversed(range(SCORING_DAYS))]
    # The monitoring DAG runs on each published day (Asset-triggered): switch it on before scoring.
    api.wait_for_dag(f"{stack.model}_monitoring")
    api.unpause(f"{stack.model}_monitoring")
    started = datetime.now(UTC)
    failed = run_scoring(stack, api, days)
    if failed:
        return failed
    return run_monitoring_summary(stack, days, started)


def run_monitoring_summary(stack: Stack, days: list[date], since: datetime, timeout: float = 600) -> int:
    """Wait for the Asset-triggered monitoring runs of ``days`` and print drift and realised performance."""
    import psycopg2

    server = ensure_postgres(stack)
    deadline = time.monotonic() + timeout
    found: dict[date, tuple[Any, ...]] = {}
    conn = psycopg2.connect(warehouse_url(stack, server))
    conn.autocommit = True
    try:
        while len(found) < len(days) and time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('monitoring.drift_runs')")
                if cur.fetchone()[0]:
                    cur.execute(
                        "SELECT score_date, drifted_features, features, drift_share, drifted, report_uri "
                        "FROM monitoring.drift_runs WHERE model = %s AND computed_at >= %s AND score_date = ANY(%s)",
                        (stack.model, since, days),
                    )
                    found = {r[0]: r for r in cur.fetchall()}
            if len(found) < len(days):
                time.sleep(3)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT score_date, labelled_rows, roc_auc, precision, recall, calibration_error, holdout_roc_auc "
                "FROM monitoring.performance WHERE model = %s AND computed_at >= %s ORDER BY score_date",
                (stack.model, since),
            )
            performance = cur.fetchall()
    finally:
        conn.close()
    dag_id = f"{stack.model}_monitoring"
    lines = ["", "=" * 78, f" Nightshift: {dag_id} (runs on each published day)"]
    for day in days:
        if day not in found:
            lines.append(f"   {day}      no drift result within {timeout:.0f} s: see the {dag_id} runs in the UI")
            continue
        _, drifted, features, share, names, report = found[day]
        which = f" ({', '.join(names)})" if names else ""
        lines.append(f"   {day}      drift in {drifted} of {features} features (share {share:.2f}){which}")
    if found:
        lines.append(f"   report          {found[max(found)][5]}")
    for day, n, auc, precision, recall, ece, holdout in performance:
        lines.append(
            f"   {day}      realised on {n:,} labels: roc_auc {auc:.3f} (holdout {holdout or float('nan'):.3f}), "
            f"precision {precision:.3f}, recall {recall:.3f}, calibration error {ece:.3f}"
        )
    lines += ["   tables          monitoring.drift_runs, drift_features, performance, alerts", "=" * 78]
    print("\n".join(lines), flush=True)
    return 0 if len(found) == len(days) else 1


def run_scoring(stack: Stack, api: AirflowApi, days: list[date]) -> int:
    """Score ``days`` with the scoring DAG (one run per day, in parallel) and print what analysts see."""
    server = ensure_postgres(stack)
    ensure_analyst(stack, server)
    dag_id = f"{stack.model}_scoring"
    api.wait_for_dag(dag_id)
    runs = {day: api.trigger(dag_id, conf={"run_date": day.isoformat()}) for day in days}
    log.info("triggered %s for %s", dag_id, ", ".join(str(d) for d in days))
    states = {day: api.wait_for_run(dag_id, run_id)["state"] for day, run_id in runs.items()}
    errors = {}
    for day, run_id in runs.items():
        if states[day] != "success":
            errors.update({f"{day} {task}": e for task, e in api.failed_task_errors(dag_id, run_id).items()})
    print_scoring_summary(stack, dag_id, states, scoring_summary(stack, server, days), errors)
    return 0 if all(s == "success" for s in states.values()) else 1


def print_scoring_summary(
    stack: Stack, dag_id: str, states: dict[date, str], summary: dict[str, Any], errors: dict[str, str]
) -> None:
    s = stack.secrets()
    schema = summary["schema"]
    lines = ["", "=" * 78, f" Nightshift: {dag_id}, {len(states)} day(s)"]
    for day, state in states.items():
        rows, quarantined = summary["rows"].get(day.isoformat()), summary["quarantined"].get(day.isoformat())
        lines.append(
            f"   {day}      {state:8s} {rows:>8,} rows in {schema}.{stack.model}_scores, {quarantined} quarantined"
        )
    for what, error in errors.items():
        first, *rest = error.splitlines() or [""]
        lines.append(f"   FAILED          {what}: {first}")
        lines += [f"                   {line}" for line in rest[:8]]
    lines += ["", f"   analyst query   {summary['analyst_query']}"]
    lines += [f"                   {'  '.join(str(v) for v in row)}" for row in summary["analyst_rows"]]
    lines += [
        "",
        f"   psql            psql '{warehouse_url(stack, ensure_postgres(stack), ANALYST_LOGIN)}'"
        f"   (password: {s['analyst_password']}, read-only role nightshift_analyst)",
        "=" * 78,
    ]
    print("\n".join(lines), flush=True)


def print_summary(
    stack: Stack, dag_id: str, run_id: str, state: str, summary: dict[str, Any], errors: dict[str, str]
) -> None:
    s = stack.secrets()
    lines = [
        "",
        "=" * 78,
        f" Nightshift: {dag_id} run {run_id}",
        f"   state           {state}",
    ]
    for task, error in errors.items():
        first, *rest = error.splitlines() or [""]
        lines.append(f"   FAILED          {task}: {first}")
        lines += [f"                   {line}" for line in rest[:12]]
    if errors:
        lines.append("   what to do      docs/runbook.md, section of the failed task; full log in the Airflow UI")
    version, champion = summary.get("model_version"), summary.get("champion_version")
    aliases = ", ".join(summary.get("aliases") or []) or "-"
    lines += [
        f"   model version   {stack.model} v{version}  aliases: {aliases}" if version else "   model version   -",
        f"   gate            {summary.get('gate_summary') or '-'}",
        f"   @champion       {stack.model} v{champion}" if champion else "   @champion       none",
        "",
        f"   Airflow UI      {stack.airflow_url}   login: admin / {s['admin_password']}",
        f"   MLflow UI       {stack.mlflow_url}",
        f"   MLflow run      {summary.get('mlflow_run_url') or '-'}",
        f"   logs            {stack.log_dir}   (make logs)",
        "   stop            make down",
        "=" * 78,
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "run", "down", "logs", "env", "status"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        stack = Stack()
        if args.command == "up":
            up(stack)
            print(
                f"Airflow UI {stack.airflow_url} (admin / {stack.secrets()['admin_password']}), "
                f"MLflow UI {stack.mlflow_url}"
            )
        elif args.command == "run":
            return run(stack)
        elif args.command == "down":
            down(stack)
        elif args.command == "logs":
            print(f"service logs: {stack.log_dir}")
            for p in sorted(stack.log_dir.glob("*.log")):
                print(f"  {p}")
            print(f"task logs:    {stack.airflow_home / 'logs'}")
            print(f"postgres:     {stack.pg_dir / 'postgres.log'} (only for the project-local cluster)")
        elif args.command == "env":
            print((stack.home / "env.sh").read_text() if (stack.home / "env.sh").exists() else "# run `make run` first")
        elif args.command == "status":
            for name in (*stack.services, "mlflow"):
                pid = service_pid(stack, name)
                print(f"{name:14s} {'running, pid ' + str(pid) if pid else 'stopped'}")
    except StackError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
