"""Staging: where a run loads a day's rows (one shared scores table) before they become visible.

A run's staging tables live in ``<schema>_staging`` and are found by the comment each one gets when
it is created (model, day, run). Per run and day there is one scores table (kind ``s``), which every
shard creates if it is not there yet and then loads in a transaction of its own; a ledger (kind
``l``) with one row per shard whose rows committed, so a retry of a loaded shard loads nothing twice;
and one quarantine table per shard (``q<shard>``). A killed shard leaves none of its rows behind (its
transaction is rolled back); :func:`assemble` then turns the scores table into one shaped like the
day's partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.pg import sql
from include.nightshift.warehouse.tables import CONSTANT_COLUMNS, Tables, columns_ddl

if TYPE_CHECKING:
    from datetime import date

    from psycopg2.extensions import connection, cursor

log = logging.getLogger(__name__)

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


def scores_table(tables: Tables, consts: Constants) -> str:
    """The run's one scores staging table of the day, which every shard loads."""
    return tables.staging(consts.day, consts.dag_run_id, "s")


def ledger_table(tables: Tables, consts: Constants) -> str:
    """The run's ledger of the day: one row (shard, result) per shard whose scores committed."""
    return tables.staging(consts.day, consts.dag_run_id, "l")


def _create_scores(cur: cursor, tables: Tables, consts: Constants, name: str) -> None:
    s = sql()
    ident = tables.staged(name)
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


def _exists(cur: cursor, tables: Tables, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s)", (f'"{tables.staging_schema}"."{name}"',))
    return cur.fetchone()[0] is not None


def ensure_scores_staging(conn: connection, tables: Tables, consts: Constants) -> str:
    """Create the run's scores staging table and its ledger unless they exist, and commit; returns the table.

    Every shard calls it before its load. Columns that are the same for the whole day get defaults, so
    COPY sends only the key and the outputs. Shards starting together are serialised by an advisory
    lock on the table's name (two concurrent ``CREATE TABLE IF NOT EXISTS`` can still collide on the
    row type), and the one that finds the table there changes nothing.
    """
    s = sql()
    name, ledger = scores_table(tables, consts), ledger_table(tables, consts)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{tables.staging_schema}.{name}",))
        if not _exists(cur, tables, name):
            _create_scores(cur, tables, consts, name)
        if not _exists(cur, tables, ledger):
            cur.execute(
                s.SQL("CREATE TABLE {} (shard integer PRIMARY KEY, result jsonb)").format(tables.staged(ledger))
            )
            _comment(cur, tables, consts, ledger)
    return name


def claim_shard(cur: cursor, tables: Tables, consts: Constants, shard: int) -> dict[str, Any] | None:
    """Inside the shard's scores transaction: take the shard's ledger row; the stored result if it was loaded.

    None: the row is ours (until the transaction ends), load the shard. A concurrent attempt of the same
    shard waits here until the first one ends: when that one committed, its stored result is returned
    and nothing is loaded again; when it rolled back, the row is taken.
    """
    s = sql()
    ledger = tables.staged(ledger_table(tables, consts))
    cur.execute(
        s.SQL("INSERT INTO {} (shard) VALUES (%s) ON CONFLICT (shard) DO NOTHING RETURNING shard").format(ledger),
        (shard,),
    )
    if cur.fetchone() is not None:
        return None
    cur.execute(s.SQL("SELECT result FROM {} WHERE shard = %s").format(ledger), (shard,))
    result: dict[str, Any] = cur.fetchone()[0]
    return result


def record_shard(cur: cursor, tables: Tables, consts: Constants, shard: int, result: dict[str, Any]) -> None:
    """Inside the shard's scores transaction, after its COPY: store the shard's result in its ledger row."""
    import json

    ledger = tables.staged(ledger_table(tables, consts))
    cur.execute(
        sql().SQL("UPDATE {} SET result = %s::jsonb WHERE shard = %s").format(ledger), (json.dumps(result), shard)
    )


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
    # No FREEZE: the table is shared by the shards, so it was not created in the loading transaction.
    return s.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT {})").format(
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
    """Build the primary key the day's partition needs on the run's scores staging table; returns its name.

    The shards loaded their rows into that one table; this checks that the ledger lists every shard and
    builds the key (so attaching does not build it under the lock); the publish drops the ledger. The output
    suite reads the table meanwhile: the index is built under a lock that lets readers through, and
    only turning it into the key waits for the suite's running query. The day's constant defaults stay
    until the publish, which drops them under the lock it takes anyway. Run again after it succeeded
    (the task cleared), it finds the key there and changes nothing.

    Returns:
        The staging table that will become the partition.

    Raises:
        DataValidationError: the day holds an entity key twice.
        RuntimeError: the ledger does not list exactly the shards ``0..shards-1`` as loaded.
    """
    from psycopg2 import errors

    s = sql()
    target, ledger = scores_table(tables, consts), ledger_table(tables, consts)
    t_ident, l_ident = tables.staged(target), tables.staged(ledger)
    pkey = f"{target}_pkey"
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s",
                (f'"{tables.staging_schema}"."{target}"', pkey),
            )
            if cur.fetchone() is not None:
                log.info("%s.%s is already assembled", tables.staging_schema, target)
                return target
            cur.execute(s.SQL("SELECT shard FROM {} WHERE result IS NOT NULL ORDER BY 1").format(l_ident))
            loaded = [r[0] for r in cur.fetchall()]
            if loaded != list(range(shards)):
                raise RuntimeError(
                    f"{tables.staging_schema}.{ledger} lists shards {loaded} as loaded, expected 0..{shards - 1}"
                )
            # The key build sorts every row of the day: with the default 64 MB it spills to disk in runs
            # (server memory for this transaction only, not the task's).
            cur.execute(s.SQL("SET LOCAL maintenance_work_mem = {}").format(s.Literal(ASSEMBLE_MAINTENANCE_MEM)))
            # One backend: the output suite reads the table meanwhile, and on 2 cores parallel workers
            # only oversubscribe them (10M rows: 7.2 s serial, 7.35 s with two workers, alone).
            cur.execute("SET LOCAL max_parallel_maintenance_workers = 0")
            # Built after the load: one sorted bulk build costs a fraction of per-row index upkeep. A
            # plain unique index takes a SHARE lock (readers pass); ADD CONSTRAINT ... USING INDEX then
            # needs the exclusive lock only to record it (both columns are NOT NULL already: no scan).
            cur.execute(
                s.SQL("CREATE UNIQUE INDEX {} ON {} ({}, score_date)").format(
                    s.Identifier(pkey), t_ident, s.Identifier(tables.key)
                )
            )
            cur.execute(
                s.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY USING INDEX {}").format(
                    t_ident, s.Identifier(pkey), s.Identifier(pkey)
                )
            )
            # The ledger stays until the publish: a shard cleared after this (by hand, or its task retried
            # late) finds its row and returns the stored result instead of loading into the keyed table.
            # No ANALYZE here: autovacuum analyzes the new partition within a minute of the load, and
            # doing it inline cost 15 % of a whole load.
    except errors.UniqueViolation as exc:
        raise duplicate_keys_error(tables, consts.day, exc.diag.message_detail) from None
    return target


def drop_constant_defaults(cur: cursor, tables: Tables, staged: str) -> None:
    """Drop the day's constant column defaults the shards' COPY used: the partition takes none of its own."""
    s = sql()
    for col in CONSTANT_COLUMNS:
        cur.execute(
            s.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(tables.staged(staged), s.Identifier(col))
        )


def count_rows(conn: connection, schema: str, table: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute(sql().SQL("SELECT count(*) FROM {}").format(sql().Identifier(schema, table)))
        return int(cur.fetchone()[0])
