"""Scoring a day with the challenger in shadow into ``<schema>.<model>_shadow_scores``.

The same path as the champion's scoring, run in one task: the pinned ``@challenger`` version's
contract, the day's shards scored one after the other into the shadow staging tables (memory is
bounded by ``scoring.batch_rows`` as always), the counts and quarantine checked, and the day swapped
in atomically under a lease of its own (``<model>_shadow``, so it never waits on the champion's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from datetime import date

    from mlflow import MlflowClient
    from psycopg2.extensions import connection

    from include.nightshift.sources import DataPaths
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowScored:
    """One day scored in shadow: its partition, rows and the challenger version."""

    score_date: date
    version: int
    rows: int
    quarantined_rows: int
    partition: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "score_date": self.score_date.isoformat(),
            "version": self.version,
            "rows": self.rows,
            "quarantined_rows": self.quarantined_rows,
            "partition": self.partition,
        }


def score_day(
    storage: Storage,
    client: MlflowClient,
    connect: Callable[[], AbstractContextManager[connection]],
    file_spec: ModelSpec,
    paths: DataPaths,
    day: date,
    dag_run_id: str,
    holder_alive: Callable[[str], bool] | None = None,
) -> ShadowScored | None:
    """Score ``day`` with the challenger in shadow; None when no challenger is in shadow.

    Raises:
        ContractError, DataValidationError: the day's file does not fit the challenger, or too many
            rows break a rule (the date is given back, nothing is published).
    """
    import mlflow

    from include.nightshift import scoring, sources, warehouse
    from include.nightshift.contract import load_contract
    from include.nightshift.evaluation import load_model
    from include.nightshift.shadow import in_shadow
    from include.nightshift.warehouse import Constants

    challenger = in_shadow(client, file_spec)
    if challenger is None:
        return None
    version, run_id = int(challenger.version), challenger.run_id or ""
    contract = load_contract(client, run_id, file_spec)
    spec = contract.apply(file_spec)
    uri = sources.day_uri(spec, paths, "features", day)
    if storage.exists(uri):
        contract.check_columns(f"{spec.name} (shadow)", version, uri, storage.read_schema(uri).names)
    total, shards = scoring.inspect_input(storage, spec, uri)
    consts = Constants(day, spec.name, version, run_id, dag_run_id)
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client.tracking_uri)
    model = load_model(f"models:/{spec.name}/{version}")
    with connect() as conn, connect() as scores, connect() as quarantine:
        tables = warehouse.ensure_tables(conn, spec, shadow=True)
        lease = warehouse.claim(conn, tables, day, dag_run_id, spec.scoring.lease_timeout_minutes, holder_alive)
        results = []
        for shard in shards:
            job = scoring.ShardJob(spec, tables, consts, storage, uri, shard, model)
            results.append(scoring.score_shard(scores, quarantine, job, heartbeat=lease.heartbeat))
        assembled = scoring.assemble_day(conn, lease, spec, consts, total, results)
        out = warehouse.publish(conn, lease, consts, assembled.staged_table, assembled.shards)
    log.info("shadow: %s version %s scored %d rows of %s into %s", spec.name, version, total, day, out.partition)
    return ShadowScored(day, version, assembled.scored_rows, assembled.quarantined_rows, out.partition)


def days_to_catch_up(conn: connection, spec: ModelSpec, version: int, lookback_days: int = 35) -> list[date]:
    """Champion days published since ``version`` entered shadow that its shadow table does not hold.

    Asset-triggered runs score these besides their events' dates: when the champion publishes several
    days while a shadow run is busy, Airflow can fold an event into a run created before it, and that
    day then reaches no run (the monitoring DAG catches up the same way). One row is read per day.
    """
    from include.nightshift.pg import sql
    from include.nightshift.warehouse import Tables
    from include.nightshift.warehouse.schema import partition_days

    with conn.cursor() as cur:
        cur.execute(
            "SELECT max(decided_at) FROM monitoring.shadow_decisions WHERE model = %s AND version = %s "
            "AND action = 'entered'",
            (spec.name, version),
        )
        row = cur.fetchone()
    entered = row[0] if row else None
    if entered is None:
        return []
    champion, shadow = Tables.for_spec(spec), Tables.for_spec(spec, shadow=True)
    days = partition_days(conn, champion)
    if not days:
        return []
    held = set(partition_days(conn, shadow))
    s = sql()
    loaded = s.SQL("SELECT scored_at FROM {} WHERE score_date = %s LIMIT 1").format(champion.published(champion.scores))
    scored = s.SQL("SELECT 1 FROM {} WHERE score_date = %s AND model_version = %s LIMIT 1").format(
        shadow.published(shadow.scores)
    )
    missing = []
    with conn.cursor() as cur:
        for day in (d for d in days if (days[-1] - d).days <= lookback_days):
            cur.execute(loaded, (day,))
            at = cur.fetchone()
            if not at or at[0] is None or at[0] < entered:
                continue  # published before the challenger entered shadow: not its to compare
            if day in held:
                cur.execute(scored, (day, version))
                if cur.fetchone():
                    continue
            missing.append(day)
    return missing
