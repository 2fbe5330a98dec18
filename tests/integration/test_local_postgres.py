"""The project-local PostgreSQL path: nothing answers on the port, so the stack starts its own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def local_home():
    # Not pytest's tmp_path: Postgres runs as an unprivileged user, who must be able to enter the folder.
    home = Path(tempfile.mkdtemp(prefix="nightshift-pg-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_a_port_where_nothing_answers_gets_a_project_local_cluster(local_home):
    import psycopg2

    from scripts.stack import postgres, services
    from scripts.stack.settings import Stack, ensure_secrets

    stack = Stack(home=local_home, db_url=None, pg_port=free_port(), db_prefix="nslocal")
    password = ensure_secrets(stack)["postgres_password"]  # what `make up` does first
    url = postgres.ensure_postgres(stack)
    try:
        assert url == f"postgresql://postgres:{password}@127.0.0.1:{stack.pg_port}"
        assert (local_home / "pg" / "data" / "PG_VERSION").exists()
        assert not (local_home / "pg" / "pwfile").exists(), "initdb's password file is removed"
        # password authentication (scram-sha-256): no password, or a wrong one, is refused
        for bad in (
            f"postgresql://postgres@127.0.0.1:{stack.pg_port}/postgres",
            f"postgresql://postgres:wrong@127.0.0.1:{stack.pg_port}/postgres",
        ):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(bad, connect_timeout=5)
        hba = (local_home / "pg" / "data" / "pg_hba.conf").read_text()
        assert "trust" not in [line.split()[-1] for line in hba.splitlines() if line.strip() and line[0] != "#"]
        postgres.ensure_databases(url, [stack.db("airflow"), stack.db("mlflow"), stack.db("warehouse")])
        with psycopg2.connect(f"{url}/nslocal_warehouse") as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user, inet_server_port()")
            assert cur.fetchone() == ("postgres", stack.pg_port)
        if os.geteuid() == 0:
            owner = (local_home / "pg" / "data").owner()
            assert owner == "nightshift", "PostgreSQL must not run as root"
        postgres.ensure_writer(stack, url)
        writer = postgres.writer_url(stack, url)
        with psycopg2.connect(writer) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("nslocal_writer",)
        # a second `up` finds it running and reuses it
        assert postgres.ensure_postgres(stack) == url
    finally:
        services.down(stack)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"{url}/postgres", connect_timeout=2)
