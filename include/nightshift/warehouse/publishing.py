"""Publishing a day: the atomic partition swap, and keeping a failed run's quarantine.

How a date is replaced atomically: a run claims the date (its :class:`~.lease.Lease`, so two runs
cannot interleave), loads into staging, builds the indexes there, and then, in one short
transaction, detaches and drops the old partition, moves the staging table into the published
schema and attaches it, and ends its lease. A reader sees the old day or the new day, never a mix; a
run killed at any point leaves the published day as it was (the transaction, or the load, is rolled
back by the server when the connection dies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from include.nightshift.pg import sql
from include.nightshift.warehouse.schema import grant_partition
from include.nightshift.warehouse.staging import drop_constant_defaults, ledger_table

if TYPE_CHECKING:
    from psycopg2.extensions import connection, cursor

    from include.nightshift.warehouse.lease import Lease
    from include.nightshift.warehouse.staging import Constants
    from include.nightshift.warehouse.tables import Tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: the partition, whether it replaced rows, the quarantined rows kept."""

    partition: str
    replaced: bool
    quarantined: int


def _move_quarantine(cur: cursor, tables: Tables, consts: Constants, shards: int) -> int:
    s = sql()
    moved = 0
    for i in range(shards):
        staged = tables.staged(tables.staging(consts.day, consts.dag_run_id, f"q{i}"))
        cur.execute(s.SQL("INSERT INTO {} SELECT * FROM {}").format(tables.published(tables.quarantine), staged))
        moved += cur.rowcount
        cur.execute(s.SQL("DROP TABLE {}").format(staged))
    return moved


def publish_quarantine_only(conn: connection, lease: Lease, consts: Constants, shards: int) -> int:
    """Keep a failed run's quarantined rows (under its DAG run id), publish no scores, give the date back."""
    tables = lease.tables
    with conn, conn.cursor() as cur:
        cur.execute(
            sql()
            .SQL("DELETE FROM {} WHERE score_date = %s AND dag_run_id = %s")
            .format(tables.published(tables.quarantine)),
            (consts.day, consts.dag_run_id),
        )
        n = _move_quarantine(cur, tables, consts, shards)
    lease.release()
    return n


def _swap(cur: cursor, tables: Tables, consts: Constants, staged: str) -> bool:
    """Replace the day's partition by ``staged``; True when a partition was there before."""
    s = sql()
    day = consts.day
    part = tables.partition(day)
    parent, part_ident = tables.published(tables.scores), tables.published(part)
    cur.execute("SELECT to_regclass(%s)", (f'"{tables.schema}"."{part}"',))
    replaced = cur.fetchone()[0] is not None
    if replaced:
        cur.execute(s.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, part_ident))
        cur.execute(s.SQL("DROP TABLE {}").format(part_ident))
    drop_constant_defaults(cur, tables, staged)
    cur.execute(s.SQL("DROP TABLE IF EXISTS {}").format(tables.staged(ledger_table(tables, consts))))
    cur.execute(s.SQL("ALTER TABLE {} SET SCHEMA {}").format(tables.staged(staged), s.Identifier(tables.schema)))
    cur.execute(s.SQL("ALTER TABLE {} RENAME TO {}").format(tables.published(staged), s.Identifier(part)))
    cur.execute(
        s.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            parent, part_ident, s.Literal(day), s.Literal(day + timedelta(days=1))
        )
    )
    cur.execute(s.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(part_ident, s.Identifier(f"{staged}_bound")))
    cur.execute(
        s.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
            part_ident, s.Identifier(f"{staged}_pkey"), s.Identifier(f"{part}_pkey")
        )
    )
    comment = f"{tables.model} scores for {day}: model version {consts.model_version}, DAG run {consts.dag_run_id}"
    cur.execute(s.SQL("COMMENT ON TABLE {} IS {}").format(part_ident, s.Literal(comment)))
    grant_partition(cur, tables, part)
    return replaced


def publish(
    conn: connection, lease: Lease, consts: Constants, staged: str, shards: int, lock_timeout_s: int = 60
) -> Published:
    """Make ``staged`` the day's partition, replace the day's quarantine and end the lease, in one transaction.

    Raises:
        ScoreDateBusyError: this run no longer holds the claim on the date.
    """
    s = sql()
    tables = lease.tables
    with conn, conn.cursor() as cur:
        # Detaching takes an exclusive lock on the scores table: wait a bounded time for analysts'
        # running queries rather than queue every new reader behind us indefinitely.
        cur.execute(s.SQL("SET LOCAL lock_timeout = {}").format(s.Literal(f"{int(lock_timeout_s)}s")))
        lease.check_held(cur)
        replaced = _swap(cur, tables, consts, staged)
        cur.execute(
            s.SQL("DELETE FROM {} WHERE score_date = %s").format(tables.published(tables.quarantine)), (consts.day,)
        )
        quarantined = _move_quarantine(cur, tables, consts, shards)
        lease.end(cur)
    part = tables.partition(consts.day)
    log.info("published %s.%s (%s)", tables.schema, part, "replaced the previous rows" if replaced else "new day")
    return Published(f"{tables.schema}.{part}", replaced, quarantined)
