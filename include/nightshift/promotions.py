"""Every move of ``@champion``, and the rollback to an earlier version.

An alias move and its row in ``monitoring.promotions`` happen together: the row is inserted in a
transaction that commits only once MLflow has moved the alias, so the log never shows a move that did
not happen. (The reverse, an alias moved with no row, needs the database to fail in the instant
between the two; the version's registry tags still tell that story.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from include.nightshift.errors import RollbackError
from include.nightshift.pg import MONITORING_DDL_LOCK, run_ddl
from include.nightshift.registry import CHAMPION, TAG, get_alias, promote

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

MoveKind = Literal["gate", "force", "rollback", "shadow"]

DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.promotions (
    id bigserial PRIMARY KEY,
    moved_at timestamptz NOT NULL DEFAULT now(),
    model text NOT NULL,
    from_version text,
    to_version text NOT NULL,
    kind text NOT NULL CONSTRAINT promotions_kind_check CHECK (kind IN ('gate', 'force', 'rollback', 'shadow')),
    reason text NOT NULL,
    requested_by text NOT NULL,
    approved_by text,
    dag_id text NOT NULL,
    run_id text NOT NULL
);
-- kind 'shadow' (a challenger promoted on live days) came later: widen the CHECK of older tables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'monitoring.promotions'::regclass
                   AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%shadow%') THEN
        ALTER TABLE monitoring.promotions DROP CONSTRAINT IF EXISTS promotions_kind_check;
        ALTER TABLE monitoring.promotions ADD CONSTRAINT promotions_kind_check
            CHECK (kind IN ('gate', 'force', 'rollback', 'shadow'));
    END IF;
END $$;
COMMENT ON TABLE monitoring.promotions IS
    'Nightshift: every move of a model''s @champion alias: from and to which version, why, who asked, who approved';
"""


def ensure_table(conn: connection) -> None:
    """Create ``monitoring.promotions`` (idempotent); the analyst role may read it when that role exists."""
    run_ddl(conn, MONITORING_DDL_LOCK, DDL, grant_schema="monitoring")


@dataclass(frozen=True)
class ChampionMove:
    """Why ``@champion`` moves, and on whose word.

    Attributes:
        kind: ``gate`` (the gate passed), ``force`` (promoted over a rejection), ``rollback``, or
            ``shadow`` (the challenger won on live days; the reason carries the live figures).
        reason: The gate summary, the force reason or the rollback reason.
        requested_by: The Airflow user who triggered the run, or ``scheduler`` for a scheduled one.
        dag_id: The DAG whose run moved the alias.
        run_id: That run.
        approved_by: Who approved the move in the UI, when the spec asks for an approval.
    """

    kind: MoveKind
    reason: str
    requested_by: str
    dag_id: str
    run_id: str
    approved_by: str | None = None

    def tags(self) -> dict[str, str]:
        tags = {
            f"{TAG}.promotion_kind": self.kind,
            f"{TAG}.promotion_reason": self.reason[:5000],
            f"{TAG}.promoted_by": f"{self.dag_id}/{self.run_id}",
            f"{TAG}.requested_by": self.requested_by,
        }
        if self.approved_by:
            tags[f"{TAG}.approved_by"] = self.approved_by
        return tags


def move_champion(
    conn: connection, client: MlflowClient, spec: ModelSpec, version: int, move: ChampionMove
) -> int | None:
    """Move ``@champion`` of ``spec.name`` to ``version`` and log it; returns the previous version.

    Two moves of one model are serialised by an advisory lock, so ``from_version`` is always right.
    """
    ensure_table(conn)
    autocommit, conn.autocommit = conn.autocommit, False  # the row must wait for the alias
    try:
        return _move(conn, client, spec, version, move)
    finally:
        conn.autocommit = autocommit


def _move(conn: connection, client: MlflowClient, spec: ModelSpec, version: int, move: ChampionMove) -> int | None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"nightshift champion {spec.name}",))
        cur.execute(
            "INSERT INTO monitoring.promotions (model, from_version, to_version, kind, reason, requested_by, "
            "approved_by, dag_id, run_id) VALUES (%s, NULL, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                spec.name,
                str(version),
                move.kind,
                move.reason,
                move.requested_by,
                move.approved_by,
                move.dag_id,
                move.run_id,
            ),
        )
        (row_id,) = cur.fetchone()
        previous = promote(client, spec, version, move.tags())  # raises: the transaction rolls back
        from_version = str(previous) if previous is not None else None
        cur.execute("UPDATE monitoring.promotions SET from_version = %s WHERE id = %s", (from_version, row_id))
    log.info("%s: @%s %s -> %s (%s, by %s)", spec.name, CHAMPION, previous, version, move.kind, move.requested_by)
    return previous


def rollback_target(client: MlflowClient, spec: ModelSpec, version: str) -> ModelVersion:
    """The model version to roll back to, after checking it exists and was once validated.

    "Validated" means it passed the gate, or it once held ``@champion`` (a forced promotion still
    went through every data suite before it was registered).

    Raises:
        RollbackError: naming the model, the version and what was found instead.
    """
    from mlflow.exceptions import MlflowException

    if not version.isdigit():
        raise RollbackError(f"rollback of {spec.name}: version must be a number like 3, got {version!r}")
    try:
        mv = client.get_model_version(spec.name, version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise
        known = sorted(int(v.version) for v in client.search_model_versions(f"name = '{spec.name}'"))
        raise RollbackError(
            f"rollback of {spec.name}: version {version} does not exist in the registry "
            f"(versions: {', '.join(map(str, known)) or 'none'})"
        ) from exc
    verdict = mv.tags.get(f"{TAG}.gate")
    was_champion = f"{TAG}.promoted_at" in mv.tags
    if verdict != "passed" and not was_champion:
        raise RollbackError(
            f"rollback of {spec.name}: version {version} was never validated: its gate verdict is "
            f"{verdict or 'missing'} and it never held @{CHAMPION}; roll back only to a version that "
            "passed the gate or was champion before"
        )
    return mv


def current_champion(client: MlflowClient, spec: ModelSpec) -> int | None:
    mv = get_alias(client, spec.name, CHAMPION)
    return int(mv.version) if mv else None
