"""The writer login every DAG connects as: least privilege in the warehouse database.

PostgreSQL roles are cluster-wide and several stacks may share one server, so the writer is named
after the stack's database prefix (``<prefix>_writer``, e.g. ``nightshift_writer``). It is a plain
LOGIN role (no superuser, no CREATEDB, no CREATEROLE) that:

- may connect to its warehouse database and create schemas there, so it owns the published, staging
  and ``monitoring`` schemas and every table in them (existing ones are handed over);
- may not connect to the databases named ``private`` (Airflow's and MLflow's): CONNECT is revoked
  from PUBLIC there, so only their owner and superusers get in;
- may not create anything in ``public`` (revoked from PUBLIC, as PostgreSQL 15+ does by default)
  and reads no table it was not granted (another stack's tables included).

Run as a superuser (the stack's setup, compose's init job), never from a DAG.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from include.nightshift.pg import ANALYST_ROLE, role_exists, sql

if TYPE_CHECKING:
    from psycopg2.extensions import connection, cursor

LOGIN_RULE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SYSTEM_SCHEMAS = ("public", "information_schema")


def writer_login(db_prefix: str) -> str:
    """The writer of the stack whose databases are ``<db_prefix>_*``."""
    login = f"{db_prefix}_writer"
    if not LOGIN_RULE.match(login):
        raise ValueError(f"database prefix {db_prefix!r} gives the writer login {login!r}; allowed: [a-z0-9_]")
    return login


def ensure_writer_role(conn: connection, login: str, password: str | None, private: list[str]) -> None:
    """Create (or update) the writer ``login`` and hand it the warehouse database ``conn`` is on.

    Args:
        conn: A superuser connection to the warehouse database.
        password: The login's password (``None`` keeps the current one; never logged).
        private: Databases the writer (and any other non-owner) may not connect to.
    """
    if not LOGIN_RULE.match(login):
        raise ValueError(f"writer login {login!r} is not a plain role name ([a-z0-9_], at most 63)")
    s = sql()
    role = s.Identifier(login)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('nightshift roles'))")
        verb = "ALTER" if role_exists(cur, login) else "CREATE"
        limits = s.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
        cur.execute(s.SQL(verb + " ROLE {} {}").format(role, limits))
        if password is not None:
            cur.execute(s.SQL("ALTER ROLE {} PASSWORD {}").format(role, s.Literal(password)))
        database = s.Identifier(conn.info.dbname)
        cur.execute(s.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(database, role))
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for name in private:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                cur.execute(s.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(s.Identifier(name)))
        _hand_over(cur, login)
        if role_exists(cur, ANALYST_ROLE):
            cur.execute(s.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, s.Identifier(ANALYST_ROLE)))


def _hand_over(cur: cursor, login: str) -> None:
    """The writer owns every non-system schema of the database and what is in it (tables made before it)."""
    s = sql()
    role = s.Identifier(login)
    cur.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> ALL(%s) "
        "AND nspowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (list(SYSTEM_SCHEMAS), login),
    )
    for (schema,) in cur.fetchall():
        cur.execute(s.SQL("ALTER SCHEMA {} OWNER TO {}").format(s.Identifier(schema), role))
    # Tables, partitioned tables, views; sequences only when no table owns them (those follow their table).
    cur.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> ALL(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
        "AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s) AND NOT EXISTS (SELECT 1 FROM pg_depend d "
        "WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "AND c.relkind = 'S')",
        (list(SYSTEM_SCHEMAS), login),
    )
    for schema, name in cur.fetchall():
        cur.execute(s.SQL("ALTER TABLE {} OWNER TO {}").format(s.Identifier(schema, name), role))
