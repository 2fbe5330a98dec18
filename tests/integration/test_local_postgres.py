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
    from scripts.stack.settings import Stack

    stack = Stack(home=local_home, db_url=None, pg_port=free_port(), db_prefix="nslocal")
    url = postgres.ensure_postgres(stack)
    try:
        assert url == f"postgresql://postgres@127.0.0.1:{stack.pg_port}"
        assert (local_home / "pg" / "data" / "PG_VERSION").exists()
        postgres.ensure_databases(url, [stack.db("airflow"), stack.db("mlflow"), stack.db("warehouse")])
        with psycopg2.connect(f"{url}/nslocal_warehouse") as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user, inet_server_port()")
            assert cur.fetchone() == ("postgres", stack.pg_port)
        if os.geteuid() == 0:
            owner = (local_home / "pg" / "data").owner()
            assert owner == "nightshift", "PostgreSQL must not run as root"
        # a second `up` finds it running and reuses it
        assert postgres.ensure_postgres(stack) == url
    finally:
        services.down(stack)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"{url}/postgres", connect_timeout=2)
