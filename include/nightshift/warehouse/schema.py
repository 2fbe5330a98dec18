"""The published schema of a model: its DDL, comments and the analyst role's grants.

``ensure_tables`` creates (idempotently) the scores table partitioned by day, the latest-scores view,
the quarantine table, the staging schema and the lease table (whose DDL lives with the lease). The
analyst role, when it exists, may read the published scores and the view, never the quarantine or
the staging schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.pg import ANALYST_ROLE, partitions, role_exists, sql
from include.nightshift.spec import check_safe_name
from include.nightshift.warehouse import lease
from include.nightshift.warehouse.tables import QUARANTINE_COLUMNS, Tables, columns_ddl

if TYPE_CHECKING:
    from datetime import date

    from psycopg2.extensions import connection, cursor

    from include.nightshift.spec import ModelSpec

DDL_LOCK = "nightshift.ensure_tables"


def _tables_ddl(t: Tables) -> list[Any]:
    s = sql()
    scores, latest, quarantine = t.published(t.scores), t.published(t.latest), t.published(t.quarantine)
    view = [
        s.SQL("CREATE OR REPLACE VIEW {} AS SELECT DISTINCT ON ({k}) * FROM {} ORDER BY {k}, score_date DESC").format(
            latest, scores, k=s.Identifier(t.key)
        )
    ]
    return [
        s.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s.Identifier(t.schema)),
        s.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s.Identifier(t.staging_schema)),
        lease.table_ddl(t),
        s.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}, score_date)) PARTITION BY RANGE (score_date)"
        ).format(scores, columns_ddl(t), s.Identifier(t.key)),
        *([] if t.shadow else view),  # shadow scores are never anyone's latest score
        s.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            quarantine, s.SQL(", ").join(s.SQL(f"{n} {ty}") for n, ty in QUARANTINE_COLUMNS)
        ),
        s.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (score_date, dag_run_id)").format(
            s.Identifier(f"{t.quarantine}_date_idx"), quarantine
        ),
    ]


def _comments(spec: ModelSpec, t: Tables) -> list[Any]:
    s = sql()
    scores, latest, quarantine = t.published(t.scores), t.published(t.latest), t.published(t.quarantine)
    about_scores = (
        f"Nightly scores of model {spec.name}: one partition per score_date, replaced atomically by "
        f"the Airflow DAG {spec.name}_scoring. {spec.description}"
    ).strip()
    if t.shadow:
        about_scores = (
            f"Shadow scores of model {spec.name}: the pinned @challenger version scored beside the champion "
            f"by the Airflow DAG {spec.name}_shadow, one partition per score_date; not in {spec.name}_scores."
        )
    about_quarantine = (
        f"Input rows of {spec.name}_scoring that broke a row-level rule and were not scored; "
        "scored rows plus quarantined rows of a DAG run equal its input rows."
    )
    comments = [
        s.SQL("COMMENT ON TABLE {} IS {}").format(scores, s.Literal(about_scores)),
        s.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            scores, s.Identifier(t.key), s.Literal(f"Entity key ({spec.entity_key}) from the landing features.")
        ),
        s.SQL("COMMENT ON TABLE {} IS {}").format(quarantine, s.Literal(about_quarantine)),
    ]
    if not t.shadow:
        comments.append(
            s.SQL("COMMENT ON VIEW {} IS {}").format(
                latest, s.Literal(f"Each {spec.entity_key}'s most recent score of model {spec.name}.")
            )
        )
    comments += [
        s.SQL("COMMENT ON COLUMN {}.{} IS {}").format(scores, s.Identifier(n), s.Literal(c))
        for n, _, c in t.score_columns
    ]
    return comments


def ensure_tables(conn: connection, spec: ModelSpec, shadow: bool = False) -> Tables:
    """Create the schemas, tables, view, comments and grants if missing (idempotent).

    Grants go to ``nightshift_analyst`` when that role exists (see :func:`ensure_analyst_role`):
    SELECT on the scores table and the view, USAGE on the published schema, and default privileges
    so that tables created later in the schema are readable too. The quarantine table and the
    staging schema stay private to the writer. With ``shadow``, the challenger's ``<model>_shadow_scores``
    (same columns and partitions, no latest-scores view).
    """
    t = Tables.for_spec(spec, shadow)
    with conn, conn.cursor() as cur:
        # Two first runs of new models may race on CREATE ... IF NOT EXISTS; serialise them.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (DDL_LOCK,))
        for statement in _tables_ddl(t):
            cur.execute(statement)
        _check_columns(cur, t)
        for statement in _comments(spec, t):
            cur.execute(statement)
        if role_exists(cur, ANALYST_ROLE):
            _grant_analyst(cur, t)
    return t


def _check_columns(cur: cursor, t: Tables) -> None:
    """An existing scores table must have the columns of the model's type (a changed type is not migrated).

    Raises:
        DataValidationError: naming the table, the columns it lacks and what to do.
    """
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (f'"{t.schema}"."{t.scores}"',),
    )
    present = {name for (name,) in cur.fetchall()}
    missing = [name for name, _, _ in t.score_columns if name not in present]
    if missing:
        raise DataValidationError(
            f"{t.schema}.{t.scores} exists without the column(s) {', '.join(missing)} of a {t.target_type} model: "
            f"the model's target type changed since the table was created. Give the model a new name (or a new "
            f"scoring.schema), or drop the old table after keeping what you need."
        )


def partition_days(conn: connection, tables: Tables) -> list[date]:
    """The published days of a model, oldest first, from its partitions' names (no rows are read).

    Empty when the scores table does not exist yet.
    """
    prefix = f"{tables.scores}_p"
    with conn.cursor() as cur:
        names = partitions(cur, tables.schema, tables.scores)
    return sorted(datetime.strptime(n.removeprefix(prefix), "%Y%m%d").date() for n in names if n.startswith(prefix))


def grant_partition(cur: cursor, t: Tables, partition: str) -> None:
    """Let the analyst role read one partition directly (reads through the parent need no grant)."""
    if role_exists(cur, ANALYST_ROLE):
        s = sql()
        cur.execute(s.SQL("GRANT SELECT ON {} TO {}").format(t.published(partition), s.Identifier(ANALYST_ROLE)))


def _grant_analyst(cur: cursor, t: Tables) -> None:
    s = sql()
    role, schema = s.Identifier(ANALYST_ROLE), s.Identifier(t.schema)
    cur.execute(s.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
    readable = [t.published(t.scores)] if t.shadow else [t.published(t.scores), t.published(t.latest)]
    cur.execute(s.SQL("GRANT SELECT ON {} TO {}").format(s.SQL(", ").join(readable), role))
    # Partitions reached through the parent need no grant; these make direct reads of a day's
    # partition (and tables created later in the schema) work too.
    cur.execute(s.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, role))
    for part in partitions(cur, t.schema, t.scores):
        cur.execute(s.SQL("GRANT SELECT ON {} TO {}").format(t.published(part), role))
    cur.execute(s.SQL("REVOKE ALL ON {} FROM {}").format(t.published(t.quarantine), role))


def ensure_analyst_role(
    conn: connection, spec: ModelSpec, login: str | None = None, password: str | None = None
) -> None:
    """Create ``nightshift_analyst`` (NOLOGIN, read-only) and grant it the model's published tables.

    Args:
        login: Optionally a LOGIN user that is made a member of the role (for psql / BI tools).
        password: The login's password (never logged).
    """
    ensure_analyst_login(conn, login, password)
    ensure_tables(conn, spec)


def ensure_analyst_login(conn: connection, login: str | None = None, password: str | None = None) -> None:
    """The roles of :func:`ensure_analyst_role` alone (a superuser's job); the grants come with the tables.

    The tables' owner (the writer) runs :func:`ensure_tables`, which grants the analyst role its reads
    and sets the writer's default privileges for tables it creates later.
    """
    s = sql()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (DDL_LOCK,))
        if not role_exists(cur, ANALYST_ROLE):
            cur.execute(s.SQL("CREATE ROLE {} NOLOGIN").format(s.Identifier(ANALYST_ROLE)))
        cur.execute(
            s.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                s.Identifier(conn.info.dbname), s.Identifier(ANALYST_ROLE)
            )
        )
        if login:
            check_safe_name(login, "analyst login")
            verb = "ALTER" if role_exists(cur, login) else "CREATE"
            cur.execute(s.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(s.Identifier(login), s.Literal(password)))
            cur.execute(s.SQL("GRANT {} TO {}").format(s.Identifier(ANALYST_ROLE), s.Identifier(login)))
            cur.execute(s.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(s.Identifier(login)))
