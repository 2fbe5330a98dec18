"""The per-date lease: one run at a time writes a model's score date.

A run claims (model, score_date) with :func:`claim` and gets a :class:`Lease`; every task of that run
works under it (tasks in other processes take it up again with :meth:`Lease.resume`). The lease is
renewed while the run works (:meth:`Lease.heartbeat`), ended inside the publishing transaction
(:meth:`Lease.end`), or given back after a failure that published nothing (:meth:`Lease.release`).
Another run's claim is taken over (:meth:`Lease.take_over`) only when that run is known to be
finished or has been silent for ``scoring.lease_timeout_minutes``. Nothing outside this module
writes or deletes lease rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import NightshiftError
from include.nightshift.pg import sql
from include.nightshift.warehouse import staging

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import date

    from psycopg2.extensions import connection, cursor

    from include.nightshift.warehouse.tables import Tables

log = logging.getLogger(__name__)


class ScoreDateBusyError(NightshiftError):
    """Another live DAG run holds the lease on this model's score date."""


class DateGivenBackError(ScoreDateBusyError):
    """Nobody holds the score date any more: a task of the run gave it back (a check failed), or it was published.

    The tasks that work beside the one that gave it back (the shards beside the input suite, the key
    build beside the output suite) end as skipped on it: the failed task tells what broke.
    """


# How long giving a date back waits to drop its staging tables (a shard's COPY or a key build may hold
# them); past it the tables are left to the next claim of the date, which drops them.
RELEASE_DROP_TIMEOUT = "10s"


def table_ddl(t: Tables) -> Any:
    """The lease table: one row per claimed model and score date, in the staging schema."""
    return (
        sql()
        .SQL(
            "CREATE TABLE IF NOT EXISTS {} (model text NOT NULL, score_date date NOT NULL, dag_run_id text NOT NULL, "
            "claimed_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL, PRIMARY KEY (model, score_date))"
        )
        .format(t.leases)
    )


@dataclass
class Lease:
    """A run's claim on (model, score_date)."""

    conn: connection
    tables: Tables
    day: date
    run_id: str
    interval: float = 30.0
    _last: float = 0.0

    @classmethod
    def resume(cls, conn: connection, tables: Tables, day: date, run_id: str) -> Lease:
        """The claim ``run_id`` made earlier (in another task of the run), checked to be still held.

        Raises:
            ScoreDateBusyError: another run has taken it over meanwhile.
        """
        lease = cls(conn, tables, day, run_id)
        lease.heartbeat(force=True)
        return lease

    def _mine(self, cur: cursor, statement: str) -> None:
        """Run ``statement`` (``{}`` is the lease table) on this run's own claim row."""
        condition = " WHERE model = %s AND score_date = %s AND dag_run_id = %s"
        cur.execute(
            sql().SQL(statement + condition).format(self.tables.leases), (self.tables.model, self.day, self.run_id)
        )

    def heartbeat(self, force: bool = False) -> None:
        """Renew the claim (at most every ``interval`` seconds); fail if another run has taken it."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        with self.conn, self.conn.cursor() as cur:
            self._mine(cur, "UPDATE {} SET heartbeat_at = now()")
            renewed = cur.rowcount == 1
            if not renewed and holder(cur, self.tables, self.day) is None:
                raise DateGivenBackError(given_back_message(self.tables, self.day, self.run_id))
            if not renewed:
                raise ScoreDateBusyError(
                    f"DAG run {self.run_id} lost its claim on {self.tables.model} scores for {self.day}: "
                    "another run took it over (this run was silent for longer than scoring.lease_timeout_minutes). "
                    "Nothing of this run was published."
                )
        self._last = now

    def release(self) -> None:
        """Give up the claim (after a failure that published nothing) and drop this date's staging tables.

        The claim is given back in a transaction of its own before the drop: tasks running beside this
        one (shards loading, the key build) renew the claim row while they hold the staging tables, so
        one transaction for both would wait on them while they wait on it, through the client, where
        PostgreSQL sees no deadlock. The drop waits at most ``RELEASE_DROP_TIMEOUT``; tables still busy
        after it are dropped by the next claim of the date.
        """
        from psycopg2 import errors

        with self.conn, self.conn.cursor() as cur:
            self._mine(cur, "DELETE FROM {}")
            released = cur.rowcount
        if not released:
            return
        try:
            with self.conn, self.conn.cursor() as cur:
                cur.execute(sql().SQL("SET LOCAL lock_timeout = {}").format(sql().Literal(RELEASE_DROP_TIMEOUT)))
                staging.drop_day(cur, self.tables, self.day)
        except errors.LockNotAvailable:
            log.warning(
                "gave %s %s back; its staging tables are still in use and are left to the next claim of the date",
                self.tables.model,
                self.day,
            )

    def check_held(self, cur: cursor) -> None:
        """Inside a transaction: lock the claim and make sure this run still holds it.

        Raises:
            ScoreDateBusyError: this run no longer holds the claim on the date.
        """
        cur.execute(
            sql()
            .SQL("SELECT dag_run_id FROM {} WHERE model = %s AND score_date = %s FOR UPDATE")
            .format(self.tables.leases),
            (self.tables.model, self.day),
        )
        row = cur.fetchone()
        if row is None or row[0] != self.run_id:
            raise ScoreDateBusyError(
                f"DAG run {self.run_id} no longer holds the claim on {self.tables.model} scores for {self.day} "
                f"(held by {row[0] if row else 'nobody'}); nothing was published"
            )

    def end(self, cur: cursor) -> None:
        """Inside the publishing transaction: the day is written, the claim ends with it."""
        cur.execute(
            sql().SQL("DELETE FROM {} WHERE model = %s AND score_date = %s").format(self.tables.leases),
            (self.tables.model, self.day),
        )

    def take_over(self, cur: cursor, holder: str) -> None:
        """Inside the claiming transaction: move the claim from the finished run ``holder`` to this run."""
        log.warning("taking over the claim on %s %s from finished DAG run %s", self.tables.model, self.day, holder)
        cur.execute(
            sql()
            .SQL(
                "UPDATE {} SET dag_run_id = %s, claimed_at = now(), heartbeat_at = now() "
                "WHERE model = %s AND score_date = %s"
            )
            .format(self.tables.leases),
            (self.run_id, self.tables.model, self.day),
        )


def holder(cur: cursor, tables: Tables, day: date) -> str | None:
    """The DAG run that holds the claim on (model, day) now; None when nobody does."""
    cur.execute(
        sql().SQL("SELECT dag_run_id FROM {} WHERE model = %s AND score_date = %s").format(tables.leases),
        (tables.model, day),
    )
    row = cur.fetchone()
    return str(row[0]) if row else None


def given_back_message(tables: Tables, day: date, run_id: str) -> str:
    """What a task beside a failed check says when it finds the date given back (it ends as skipped)."""
    return (
        f"DAG run {run_id} has no claim on {tables.model} scores for {day} any more: another task of the run "
        "gave the date back after a failed check (that task's log says what broke), or the run published "
        "already. Nothing more of this run is written."
    )


def hold_claim(cur: cursor, tables: Tables, day: date, run_id: str) -> None:
    """Inside a loading transaction: make sure ``run_id`` holds the date, and keep it from being given back
    until the transaction ends (a key-share lock on the claim row: renewals pass, a release waits).

    Raises:
        DateGivenBackError: nobody holds the date any more.
        ScoreDateBusyError: another run holds it.
    """
    cur.execute(
        sql().SQL("SELECT dag_run_id FROM {} WHERE model = %s AND score_date = %s FOR KEY SHARE").format(tables.leases),
        (tables.model, day),
    )
    row = cur.fetchone()
    if row is None:
        raise DateGivenBackError(given_back_message(tables, day, run_id))
    if row[0] != run_id:
        raise ScoreDateBusyError(
            f"DAG run {run_id} lost its claim on {tables.model} scores for {day} to DAG run {row[0]}; "
            "nothing of this run was published"
        )


def given_back(conn: connection, tables: Tables, day: date) -> bool:
    """Whether nobody holds the claim on (model, day): a task of the holding run gave it back, or it published."""
    with conn, conn.cursor() as cur:
        return holder(cur, tables, day) is None


def _insert_or_renew(cur: cursor, lease: Lease, timeout_minutes: int) -> bool:
    """Claim the date unless another run holds it and showed a sign of life within the timeout."""
    t = lease.tables
    cur.execute(
        sql()
        .SQL(
            "INSERT INTO {l} AS l (model, score_date, dag_run_id, claimed_at, heartbeat_at) "
            "VALUES (%s, %s, %s, now(), now()) ON CONFLICT (model, score_date) DO UPDATE "
            "SET dag_run_id = EXCLUDED.dag_run_id, claimed_at = now(), heartbeat_at = now() "
            "WHERE l.dag_run_id = EXCLUDED.dag_run_id OR l.heartbeat_at < now() - make_interval(mins => %s) "
            "RETURNING 1"
        )
        .format(l=t.leases),
        (t.model, lease.day, lease.run_id, timeout_minutes),
    )
    return cur.fetchone() is not None


def claim(
    conn: connection,
    tables: Tables,
    day: date,
    run_id: str,
    timeout_minutes: int,
    holder_alive: Callable[[str], bool] | None = None,
) -> Lease:
    """Claim the score date for ``run_id`` and drop staging tables left by earlier attempts.

    The same run (a retry) takes its own claim back. Another run's claim is taken over only when that
    run is known to be finished (``holder_alive`` says so) or has been silent for ``timeout_minutes``.

    Raises:
        ScoreDateBusyError: Another live run is writing this date; the message names it.
    """
    lease = Lease(conn, tables, day, run_id)
    with conn, conn.cursor() as cur:
        if not _insert_or_renew(cur, lease, timeout_minutes):
            cur.execute(
                sql()
                .SQL(
                    "SELECT dag_run_id, claimed_at, heartbeat_at FROM {} "
                    "WHERE model = %s AND score_date = %s FOR UPDATE"
                )
                .format(tables.leases),
                (tables.model, day),
            )
            holder, claimed_at, heartbeat_at = cur.fetchone()
            if holder_alive is None or holder_alive(holder):
                raise ScoreDateBusyError(
                    f"{tables.model} scores for {day} are being written by DAG run {holder} "
                    f"(claimed {claimed_at:%Y-%m-%d %H:%M:%S %Z}, last sign of life {heartbeat_at:%H:%M:%S %Z}); "
                    f"run {run_id} will not interleave with it. It retries later; the claim lapses "
                    f"{timeout_minutes} min after that run's last sign of life."
                )
            lease.take_over(cur, holder)
        dropped = staging.drop_day(cur, tables, day)
    if dropped:
        log.info("dropped %d staging table(s) left by earlier attempts: %s", len(dropped), ", ".join(dropped))
    lease._last = time.monotonic()
    return lease
