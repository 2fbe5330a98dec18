"""Small PostgreSQL helpers the warehouse, monitoring, alert and promotion tables share.

This module never imports Airflow; functions receive a psycopg2 connection or cursor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg2.extensions import connection, cursor

# The read-only role analysts connect through (see ``warehouse.schema.ensure_analyst_role``).
ANALYST_ROLE = "nightshift_analyst"
# Every module that creates tables in the ``monitoring`` schema takes this one lock, so that two
# first runs never race on ``CREATE SCHEMA IF NOT EXISTS monitoring``.
MONITORING_DDL_LOCK = "nightshift monitoring ddl"


def sql() -> Any:
    """``psycopg2.sql``, imported when first needed."""
    from psycopg2 import sql as _sql

    return _sql


def role_exists(cur: cursor, role: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    return cur.fetchone() is not None


def partitions(cur: cursor, schema: str, table: str) -> list[str]:
    """Names of the partitions of ``schema.table`` (none when the table does not exist)."""
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) "
        "ORDER BY 1",
        (f'"{schema}"."{table}"',),
    )
    return [name for (name,) in cur.fetchall()]


def run_ddl(conn: connection, lock: str, ddl: str, grant_schema: str | None = None) -> None:
    """Run ``ddl`` (idempotent statements) in one transaction, serialised by an advisory lock.

    Two first runs may race on ``CREATE ... IF NOT EXISTS``; the lock named ``lock`` serialises them.
    With ``grant_schema``, the analyst role (when it exists) may then read every table of that schema.
    """
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
        cur.execute(ddl)
        if grant_schema and role_exists(cur, ANALYST_ROLE):
            grant_schema_read(cur, grant_schema)


def grant_schema_read(cur: cursor, schema: str) -> None:
    """The analyst role reads every table of ``schema``, including tables created there later."""
    s = sql()
    role, ident = s.Identifier(ANALYST_ROLE), s.Identifier(schema)
    cur.execute(s.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, role))
    cur.execute(s.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident, role))
    cur.execute(s.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(ident, role))


def insert_row(cur: cursor, table: str, row: dict[str, Any], suffix: str = "") -> None:
    """``INSERT INTO <table> (<keys>) VALUES (<values>) <suffix>`` for one row given as a dict.

    ``table`` is ``schema.table`` of our own fixed tables; the column names are the dict's keys,
    quoted as identifiers; dict values are written as JSON.
    """
    from psycopg2.extras import Json

    s = sql()
    schema, name = table.split(".")
    values = [Json(v) if isinstance(v, dict) else v for v in row.values()]
    cur.execute(
        s.SQL("INSERT INTO {} ({}) VALUES ({}) " + suffix).format(
            s.Identifier(schema, name),
            s.SQL(", ").join(s.Identifier(c) for c in row),
            s.SQL(", ").join([s.Placeholder()] * len(row)),
        ),
        values,
    )
