"""Staging: where a run loads a day's rows (one table per shard) before they become visible.

A run's staging tables live in ``<schema>_staging`` and are found by the comment each one gets when
it is created (model, day, run). A shard's table is created and loaded in one transaction, so a
killed attempt leaves nothing behind; :func:`assemble` then merges the shards into one table shaped
like the day's partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.pg import sql
from include.nightshift.warehouse.tables import CONSTANT_COLUMNS, Tables, columns_ddl

if TYPE_CHECKING:
    from datetime import date

    from psycopg2.extensions import connection, cursor

STAGING_COMMENT = "nightshift staging: model={model} date={day} run={run}"


@dataclass(frozen=True)
class Constants:
    """The values every row of a day shares; staging tables get them as column defaults."""

    day: date
    model_name: str
    model_version: int
    mlflow_run_id: str
    dag_run_id: str


def _names(cur: cursor, tables: Tables, day: date | None) -> list[str]:
    """Staging tables of the model (and ``day``), found by the comment each one gets when created."""
    if day:
        prefix = STAGING_COMMENT.format(model=tables.model, day=day, run="")
    else:
        prefix = f"nightshift staging: model={tables.model} "
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(obj_description(c.oid, 'pg_class'), %s) "
        "ORDER BY 1",
        (tables.staging_schema, prefix),
    )
    return [r[0] for r in cur.fetchall()]


def drop_day(cur: cursor, tables: Tables, day: date) -> list[str]:
    """Drop every staging table of (model, day), whatever run left it. Only the lease's holder calls it."""
    names = _names(cur, tables, day)
    for name in names:
        cur.execute(sql().SQL("DROP TABLE IF EXISTS {}").format(tables.staged(name)))
    return names


def staging_tables(conn: connection, tables: Tables, day: date | None = None) -> list[str]:
    """Names of the staging tables present for the model (and ``day``)."""
    with conn, conn.cursor() as cur:
        return _names(cur, tables, day)


def _comment(cur: cursor, tables: Tables, consts: Constants, name: str) -> None:
    comment = STAGING_COMMENT.format(model=tables.model, day=consts.day, run=consts.dag_run_id)
    cur.execute(sql().SQL("COMMENT ON TABLE {} IS {}").format(tables.staged(name), sql().Literal(comment)))


def _set_defaults(cur: cursor, ident: Any, defaults: dict[str, Any]) -> None:
    s = sql()
    for col, value in defaults.items():
        cur.execute(
            s.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(ident, s.Identifier(col), s.Literal(value))
        )


def create_scores_staging(cur: cursor, tables: Tables, consts: Constants, shard: int) -> str:
    """(Re-)create one shard's scores staging table in the current transaction; returns its name.

    Columns that are the same for the whole day get defaults, so COPY sends only the key and the outputs.
    """
    s = sql()
    name = tables.staging(consts.day, consts.dag_run_id, f"s{shard}")
    ident = tables.staged(name)
    cur.execute(s.SQL("DROP TABLE IF EXISTS {}").format(ident))
    cur.execute(s.SQL("CREATE TABLE {} ({})").format(ident, columns_ddl(tables)))
    _set_defaults(
        cur,
        ident,
        {
            "score_date": consts.day,
            "model_name": consts.model_name,
            "model_version": consts.model_version,
            "mlflow_run_id": consts.mlflow_run_id,
            "dag_run_id": consts.dag_run_id,
        },
    )
    cur.execute(s.SQL("ALTER TABLE {} ALTER COLUMN scored_at SET DEFAULT now()").format(ident))
    # Matches the partition bound, so attaching needs no scan under the exclusive lock; checked per
    # row during COPY, where it costs nothing measurable, instead of by a scan afterwards.
    cur.execute(
        s.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (score_date >= {} AND score_date < {})").format(
            ident, s.Identifier(f"{name}_bound"), s.Literal(consts.day), s.Literal(consts.day + timedelta(days=1))
        )
    )
    _comment(cur, tables, consts, name)
    return name


def create_quarantine_staging(cur: cursor, tables: Tables, consts: Constants, shard: int) -> str:
    """(Re-)create one shard's quarantine staging table in the current transaction; returns its name."""
    s = sql()
    name = tables.staging(consts.day, consts.dag_run_id, f"q{shard}")
    ident = tables.staged(name)
    cur.execute(s.SQL("DROP TABLE IF EXISTS {}").format(ident))
    cur.execute(
        s.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(ident, tables.published(tables.quarantine))
    )
    _set_defaults(cur, ident, {"score_date": consts.day, "dag_run_id": consts.dag_run_id})
    _comment(cur, tables, consts, name)
    return name


def copy_scores_sql(tables: Tables, staging: str, binary: bool) -> Any:
    s = sql()
    cols = s.SQL(", ").join(s.Identifier(c) for c in tables.copy_columns)
    # FREEZE: the table was created in this transaction, so rows can be written frozen (no later
    # hint-bit rewrite or anti-wraparound vacuum of a freshly loaded day).
    return s.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT {}, FREEZE)").format(
        tables.staged(staging), cols, s.SQL("binary" if binary else "csv")
    )


def copy_quarantine_sql(tables: Tables, staging: str) -> Any:
    return sql().SQL("COPY {} (entity_key, rule, row) FROM STDIN WITH (FORMAT csv)").format(tables.staged(staging))


def duplicate_keys_error(tables: Tables, day: date, detail: str | None) -> DataValidationError:
    return DataValidationError(
        f"input of {tables.model} for {day} has duplicate {tables.key} values; each entity may be scored "
        f"once per day ({detail or 'duplicate key'}). Nothing was published; fix the landing file and "
        "re-run the date."
    )


ASSEMBLE_MAINTENANCE_MEM = "512MB"


def assemble(conn: connection, tables: Tables, consts: Constants, shards: int) -> str:
    """Merge the shards' staging tables into one table shaped like the day's partition.

    Builds the primary key the partition needs, so attaching does not build it under the lock.

    Returns:
        The staging table that will become the partition.

    Raises:
        DataValidationError: the day holds an entity key twice.
    """
    from psycopg2 import errors

    s = sql()
    day, run = consts.day, consts.dag_run_id
    target = tables.staging(day, run, "s0")
    t_ident = tables.staged(target)
    try:
        with conn, conn.cursor() as cur:
            # The key build sorts every row of the day: with the default 64 MB it spills to disk in runs
            # (server memory for this transaction only, not the task's).
            cur.execute(s.SQL("SET LOCAL maintenance_work_mem = {}").format(s.Literal(ASSEMBLE_MAINTENANCE_MEM)))
            for i in range(1, shards):
                other = tables.staged(tables.staging(day, run, f"s{i}"))
                cur.execute(s.SQL("INSERT INTO {} SELECT * FROM {}").format(t_ident, other))
                cur.execute(s.SQL("DROP TABLE {}").format(other))
            for col in CONSTANT_COLUMNS:
                cur.execute(s.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(t_ident, s.Identifier(col)))
            # Built after the load: one sorted bulk build costs a fraction of per-row index upkeep.
            cur.execute(
                s.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}, score_date)").format(
                    t_ident, s.Identifier(f"{target}_pkey"), s.Identifier(tables.key)
                )
            )
            # No ANALYZE here: autovacuum analyzes the new partition within a minute of the load, and
            # doing it inline cost 15 % of a whole load.
    except errors.UniqueViolation as exc:
        raise duplicate_keys_error(tables, day, exc.diag.message_detail) from None
    return target


def count_rows(conn: connection, schema: str, table: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute(sql().SQL("SELECT count(*) FROM {}").format(sql().Identifier(schema, table)))
        return int(cur.fetchone()[0])
