"""PostgreSQL for the embedded stack: a server to use, or a project-local cluster, and its databases.

Without NIGHTSHIFT_DB_URL, a server answering on 127.0.0.1:NIGHTSHIFT_PG_PORT is used; if none
answers, a project-local cluster is initialised under $NIGHTSHIFT_HOME/pg with the PostgreSQL binaries
and started on that port (as the unprivileged user `nightshift` when run as root: PostgreSQL refuses
to run as root). That cluster uses password authentication (scram-sha-256): its superuser's password
is generated into the secrets file (``postgres_password``). A server that already answers (e.g. the
machine's, with its own authentication) is used as it is.

The DAGs connect as the writer login ``<prefix>_writer`` (:func:`ensure_writer`), never as the superuser.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from scripts.stack.settings import Stack, StackError

log = logging.getLogger("nightshift.stack")

PG_USER = "nightshift"  # the unprivileged OS user a root-run stack starts PostgreSQL as
ANALYST_LOGIN = "analyst"


def pg_answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def pg_bin(name: str) -> str:
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


def as_pg_user(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: run its commands as the unprivileged user 'nightshift'."""
    if os.geteuid() != 0:
        return cmd
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER], check=True)
    return ["runuser", "-u", PG_USER, "--", *cmd]


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    p = urllib.parse.urlsplit(url)
    if p.password:
        return url.replace(f":{p.password}@", ":***@")
    return url


def local_server_url(stack: Stack) -> str:
    """The superuser URL on 127.0.0.1, with the project-local cluster's password once it is generated."""
    password = stack.secrets().get("postgres_password")
    secret = f":{urllib.parse.quote(password, safe='')}" if password else ""
    return f"postgresql://postgres{secret}@127.0.0.1:{stack.pg_port}"


def server_url(stack: Stack) -> str:
    """The server URL (no database) the stack uses, without checking or starting anything."""
    return stack.db_url.rstrip("/") if stack.db_url else local_server_url(stack)


def start_local_postgres(stack: Stack) -> str:
    """Initialise (once) and start a cluster under $NIGHTSHIFT_HOME/pg on NIGHTSHIFT_PG_PORT."""
    data, sock = stack.pg_dir / "data", stack.pg_dir / "run"
    sock.mkdir(parents=True, exist_ok=True)
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        as_pg_user(["true"])  # creates the user if needed
        shutil.chown(stack.pg_dir, PG_USER)
        shutil.chown(sock, PG_USER)
    if not (data / "PG_VERSION").exists():
        init_cluster(stack, data)
    logfile = stack.pg_dir / "postgres.log"
    opts = f"-p {stack.pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock}"
    res = subprocess.run(
        as_pg_user([pg_bin("pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", opts, "-w", "-t", "60", "start"]),
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise StackError(
            f"project-local PostgreSQL did not start on port {stack.pg_port}: "
            f"{res.stderr.strip() or res.stdout.strip()} (log: {logfile})"
        )
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    (stack.run_dir / "postgres.local").write_text(str(data))
    return local_server_url(stack)


def init_cluster(stack: Stack, data: Path) -> None:
    """``initdb`` with password authentication: the superuser's password comes from the secrets file."""
    password = stack.secrets().get("postgres_password")
    if not password:
        raise StackError(f"no postgres_password in {stack.secrets_file}: bring the stack up with `make up`")
    log.info("initialising a project-local PostgreSQL cluster in %s (scram-sha-256)", data)
    pwfile = stack.pg_dir / "pwfile"
    pwfile.write_text("")  # created empty and private before the password goes in
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(pwfile, PG_USER)
    pwfile.write_text(password + "\n")
    cmd = [pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        subprocess.run(as_pg_user([*cmd, "-E", "UTF8", "--no-instructions"]), check=True, capture_output=True)
    finally:
        pwfile.unlink(missing_ok=True)


def stop_local_postgres(stack: Stack) -> None:
    """Stop the project-local cluster, if this stack started one."""
    marker = stack.run_dir / "postgres.local"
    if not marker.exists():
        return
    data = marker.read_text().strip()
    subprocess.run(as_pg_user([pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]), capture_output=True)
    marker.unlink()
    log.info("stopped the project-local PostgreSQL")


def ensure_postgres(stack: Stack) -> str:
    """The server URL (no database): NIGHTSHIFT_DB_URL, a running server, or a project-local one (started)."""
    if stack.db_url:
        url = stack.db_url.rstrip("/")
        if not pg_answers(f"{url}/postgres"):
            raise StackError(f"NIGHTSHIFT_DB_URL={redact(url)} does not answer")
        return url
    url = local_server_url(stack)
    if pg_answers(f"{url}/postgres"):
        log.info("using the PostgreSQL server on 127.0.0.1:%d", stack.pg_port)
        return url
    log.info("no PostgreSQL answers on 127.0.0.1:%d: starting a project-local one", stack.pg_port)
    return start_local_postgres(stack)


def ensure_databases(server: str, names: list[str], reset: bool = False) -> None:
    """Create the databases that do not exist; with ``reset``, drop and recreate them (tests)."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(f"{server}/postgres")
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


def warehouse_url(stack: Stack, server: str, login: str | None = None, password: str | None = None) -> str:
    """The warehouse database URL, as the server's user or as ``login``."""
    parsed = urllib.parse.urlsplit(server)
    netloc = parsed.netloc
    if login:
        host = netloc.rsplit("@", 1)[-1]
        secret = f":{urllib.parse.quote(password, safe='')}" if password else ""
        netloc = f"{login}{secret}@{host}"
    return urllib.parse.urlunsplit((parsed.scheme, netloc, f"/{stack.db('warehouse')}", "", ""))


def writer_url(stack: Stack, server: str) -> str:
    """The warehouse URL of the writer login (what the DAGs' ``postgres_default`` holds)."""
    return warehouse_url(stack, server, stack.writer_login, stack.secrets().get("writer_password"))


def ensure_writer(stack: Stack, server: str) -> None:
    """The writer login of this stack, owning its warehouse schemas, kept out of Airflow's and MLflow's DBs."""
    import psycopg2

    from include.nightshift.warehouse.roles import ensure_writer_role

    conn = psycopg2.connect(warehouse_url(stack, server))
    try:
        private = [stack.db("airflow"), stack.db("mlflow")]
        ensure_writer_role(conn, stack.writer_login, stack.secrets()["writer_password"], private)
    finally:
        conn.close()


def ensure_analyst(stack: Stack, server: str, password: str) -> None:
    """The read-only role ``nightshift_analyst`` and a login ``analyst`` in it (roles as the superuser,
    the model's tables and grants as the writer, who owns them)."""
    import psycopg2

    from include.nightshift.spec import load_model
    from include.nightshift.warehouse import ensure_analyst_login, ensure_tables

    for url, step in ((warehouse_url(stack, server), "roles"), (writer_url(stack, server), "tables")):
        conn = psycopg2.connect(url)
        try:
            if step == "roles":
                ensure_analyst_login(conn, ANALYST_LOGIN, password)
            else:
                ensure_tables(conn, load_model(stack.model))
        finally:
            conn.close()
