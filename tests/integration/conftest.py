"""Fixtures of the integration tests (the session's platform is in ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def warehouse(platform):
    """An autocommit psycopg2 connection to the test platform's warehouse database, as the writer login
    the DAGs use (so that what a test sets up is owned by the DAGs' login, as in production)."""
    import psycopg2

    from scripts.stack.postgres import ensure_postgres, writer_url

    conn = psycopg2.connect(writer_url(platform, ensure_postgres(platform)))
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def superuser(platform):
    """An autocommit connection to the warehouse database as the server's superuser (roles, grants)."""
    import psycopg2

    from scripts.stack.postgres import ensure_postgres

    conn = psycopg2.connect(f"{ensure_postgres(platform)}/{platform.db('warehouse')}")
    conn.autocommit = True
    yield conn
    conn.close()
