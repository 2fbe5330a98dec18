"""Fixtures of the integration tests (the session's platform is in ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def warehouse(platform):
    """An autocommit psycopg2 connection to the test platform's warehouse database."""
    import psycopg2

    from scripts.stack.postgres import ensure_postgres

    conn = psycopg2.connect(f"{ensure_postgres(platform)}/{platform.db('warehouse')}")
    conn.autocommit = True
    yield conn
    conn.close()
