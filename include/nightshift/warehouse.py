"""The scored tables in PostgreSQL: DDL, the per-date lease, staging, and the atomic swap.

Layout, for a model ``churn`` and the spec's ``scoring.schema`` (default ``nightshift``):

- ``nightshift.churn_scores``: declaratively partitioned by ``score_date``, one partition per day
  (``churn_scores_p20261120``); primary key (entity key, score_date), which serves look-ups by entity
  and the latest-score view. (A "top scores of a day" index doubled the cost of a load; a day's top N
  is a sort of one partition.)
- ``nightshift.churn_latest_scores``: a view with each entity's latest score.
- ``nightshift.churn_quarantine``: rows that broke a row-level rule, with the rule and the DAG run.
- ``nightshift_staging``: where a run loads its rows before they become visible, and the lease table.

How a date is replaced atomically: a run claims the date (a lease row, so two runs cannot
interleave), loads into a staging table in ``<schema>_staging``, builds the indexes there, and then,
in one short transaction, detaches and drops the old partition, moves the staging table into the
published schema and attaches it. A reader sees the old day or the new day, never a mix; a run killed
at any point leaves the published day as it was (the transaction, or the load, is rolled back by the
server when the connection dies).

Every identifier comes from a validated spec and reaches SQL only through ``psycopg2.sql.Identifier``.
This module never imports Airflow; functions receive a psycopg2 connection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError, NightshiftError
from include.nightshift.spec import check_safe_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

ANALYST_ROLE = "nightshift_analyst"
STAGING_COMMENT = "nightshift staging: model={model} date={day} run={run}"


class ScoreDateBusyError(NightshiftError):
    """Another live DAG run holds the lease on this model's score date."""


def _sql() -> Any:
    from psycopg2 import sql

    return sql


@dataclass(frozen=True)
class Tables:
    """Every identifier the scoring path uses for one model, validated once."""

    model: str
    schema: str
    key: str
    key_type: str

    def __post_init__(self) -> None:
        for what, value in (("model name", self.model), ("scoring.schema", self.schema), ("entity_key", self.key)):
            check_safe_name(value, what)
        if self.key_type not in ("bigint", "text"):
            raise ValueError(f"scoring.entity_key_type {self.key_type!r} is not one of bigint, text")

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> Tables:
        return cls(spec.name, spec.scoring.schema_name, spec.entity_key, spec.scoring.entity_key_type)

    @property
    def staging_schema(self) -> str:
        return f"{self.schema}_staging"

    @property
    def scores(self) -> str:
        return f"{self.model}_scores"

    @property
    def latest(self) -> str:
        return f"{self.model}_latest_scores"

    @property
    def quarantine(self) -> str:
        return f"{self.model}_quarantine"

    @property
    def leases(self) -> Any:
        """The lease table (one row per claimed model and score date), quoted."""
        return self.ident(self.staging_schema, "score_leases")

    def partition(self, day: date) -> str:
        return f"{self.model}_scores_p{day:%Y%m%d}"

    def staging(self, day: date, run_id: str, kind: str) -> str:
        """A staging table of one run: ``kind`` is ``s<shard>`` (scores) or ``q<shard>`` (quarantine)."""
        import hashlib

        digest = hashlib.sha1(run_id.encode()).hexdigest()[:6]
        return f"{self.model}_{day:%Y%m%d}_{digest}_{kind}"

    def ident(self, schema: str, name: str) -> Any:
        return _sql().Identifier(schema, name)


# The published columns after the entity key: (name, type, comment).
SCORE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("score_date", "date NOT NULL", "The day of the features that were scored (the partition key)."),
    ("score", "double precision NOT NULL", "Predicted probability of the positive class, 0 to 1."),
    ("predicted_label", "smallint NOT NULL", "1 when score >= the spec's decision_threshold, else 0."),
    ("model_name", "text NOT NULL", "Registered MLflow model name."),
    ("model_version", "integer NOT NULL", "MLflow model version that held @champion when the run started."),
    ("mlflow_run_id", "text NOT NULL", "MLflow run that trained that version."),
    ("dag_run_id", "text NOT NULL", "Airflow DAG run that wrote this day."),
    ("scored_at", "timestamptz NOT NULL", "When the rows were loaded."),
)
# Loaded per row by COPY; every other column is the same for the whole day and comes from a default.
COPY_COLUMNS = ("score", "predicted_label")
QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("score_date", "date NOT NULL"),
    ("entity_key", "text"),
    ("rule", "text NOT NULL"),
    ("row", "jsonb NOT NULL"),
    ("dag_run_id", "text NOT NULL"),
    ("quarantined_at", "timestamptz NOT NULL DEFAULT now()"),
)


def _columns_ddl(t: Tables) -> Any:
    sql = _sql()
    cols = [sql.SQL("{} {} NOT NULL").format(sql.Identifier(t.key), sql.SQL(t.key_type))]
    cols += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(ty)) for n, ty, _ in SCORE_COLUMNS]
    return sql.SQL(", ").join(cols)


def ensure_tables(conn: connection, spec: ModelSpec) -> Tables:
    """Create the schemas, tables, view, comments and grants if missing (idempotent).

    Grants go to ``nightshift_analyst`` when that role exists (see :func:`ensure_analyst_role`):
    SELECT on the scores table and the view, USAGE on the published schema, and default privileges
    so that tables created later in the schema are readable too. The quarantine table and the
    staging schema stay private to the writer.
    """
    sql = _sql()
    t = Tables.for_spec(spec)
    scores, latest, quarantine = (t.ident(t.schema, n) for n in (t.scores, t.latest, t.quarantine))
    statements = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(t.schema)),
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(t.staging_schema)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (model text NOT NULL, score_date date NOT NULL, dag_run_id text NOT NULL, "
            "claimed_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL, PRIMARY KEY (model, score_date))"
        ).format(t.leases),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}, score_date)) PARTITION BY RANGE (score_date)"
        ).format(scores, _columns_ddl(t), sql.Identifier(t.key)),
        sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT DISTINCT ON ({k}) * FROM {} ORDER BY {k}, score_date DESC").format(
            latest, scores, k=sql.Identifier(t.key)
        ),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            quarantine, sql.SQL(", ").join(sql.SQL(f"{n} {ty}") for n, ty in QUARANTINE_COLUMNS)
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (score_date, dag_run_id)").format(
            sql.Identifier(f"{t.quarantine}_date_idx"), quarantine
        ),
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            scores,
            sql.Literal(
                f"Nightly scores of model {spec.name}: one partition per score_date, replaced atomically by "
                f"the Airflow DAG {spec.name}_scoring. {spec.description}".strip()
            ),
        ),
        sql.SQL("COMMENT ON COLUMN {} IS {}").format(
            sql.SQL("{}.{}").format(scores, sql.Identifier(t.key)),
            sql.Literal(f"Entity key ({spec.entity_key}) from the landing features."),
        ),
        sql.SQL("COMMENT ON VIEW {} IS {}").format(
            latest, sql.Literal(f"Each {spec.entity_key}'s most recent score of model {spec.name}.")
        ),
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            quarantine,
            sql.Literal(
                f"Input rows of {spec.name}_scoring that broke a row-level rule and were not scored; "
                "scored rows plus quarantined rows of a DAG run equal its input rows."
            ),
        ),
    ]
    statements += [
        sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(scores, sql.Identifier(n), sql.Literal(c))
        for n, _, c in SCORE_COLUMNS
    ]
    with conn, conn.cursor() as cur:
        # Two first runs of new models may race on CREATE ... IF NOT EXISTS; serialise them.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('nightshift.ensure_tables'))")
        for s in statements:
            cur.execute(s)
        if role_exists(cur, ANALYST_ROLE):
            _grant_analyst(cur, t)
    return t


def partition_days(conn: connection, tables: Tables) -> list[date]:
    """The published days of a model, oldest first, from its partitions' names (no rows are read).

    Empty when the scores table does not exist yet.
    """
    prefix = f"{tables.scores}_p"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            (f'"{tables.schema}"."{tables.scores}"',),
        )
        names = [name for (name,) in cur.fetchall()]
    return sorted(datetime.strptime(n.removeprefix(prefix), "%Y%m%d").date() for n in names if n.startswith(prefix))


def role_exists(cur: Any, role: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    return cur.fetchone() is not None


def _grant_analyst(cur: Any, t: Tables) -> None:
    sql = _sql()
    role, schema = sql.Identifier(ANALYST_ROLE), sql.Identifier(t.schema)
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
    cur.execute(
        sql.SQL("GRANT SELECT ON {}, {} TO {}").format(t.ident(t.schema, t.scores), t.ident(t.schema, t.latest), role)
    )
    # Partitions reached through the parent need no grant; these make direct reads of a day's
    # partition (and tables created later in the schema) work too.
    cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, role))
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (f'"{t.schema}"."{t.scores}"',),
    )
    for (part,) in cur.fetchall():
        cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(t.ident(t.schema, part), role))
    cur.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(t.ident(t.schema, t.quarantine), role))


def ensure_analyst_role(
    conn: connection, spec: ModelSpec, login: str | None = None, password: str | None = None
) -> None:
    """Create ``nightshift_analyst`` (NOLOGIN, read-only) and grant it the model's published tables.

    Args:
        login: Optionally a LOGIN user that is made a member of the role (for psql / BI tools).
        password: The login's password (never logged).
    """
    sql = _sql()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('nightshift.ensure_tables'))")
        if not role_exists(cur, ANALYST_ROLE):
            cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ANALYST_ROLE)))
        if login:
            check_safe_name(login, "analyst login")
            verb = "ALTER" if role_exists(cur, login) else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(login), sql.Literal(password))
            )
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(ANALYST_ROLE), sql.Identifier(login)))
            cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(sql.Identifier(login)))
    ensure_tables(conn, spec)


# --- the lease on a score date -------------------------------------------------------------------


@dataclass
class Lease:
    """A run's claim on (model, score_date). Renewed while the run works; released when it publishes."""

    conn: connection
    tables: Tables
    day: date
    run_id: str
    interval: float = 30.0
    _last: float = 0.0

    def heartbeat(self, force: bool = False) -> None:
        """Renew the claim (at most every ``interval`` seconds); fail if another run has taken it."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                _sql()
                .SQL("UPDATE {} SET heartbeat_at = now() WHERE model = %s AND score_date = %s AND dag_run_id = %s")
                .format(self.tables.leases),
                (self.tables.model, self.day, self.run_id),
            )
            if cur.rowcount != 1:
                raise ScoreDateBusyError(
                    f"DAG run {self.run_id} lost its claim on {self.tables.model} scores for {self.day}: "
                    "another run took it over (this run was silent for longer than scoring.lease_timeout_minutes). "
                    "Nothing of this run was published."
                )
        self._last = now


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
    sql = _sql()
    leases = tables.leases
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {l} AS l (model, score_date, dag_run_id, claimed_at, heartbeat_at) "
                "VALUES (%s, %s, %s, now(), now()) ON CONFLICT (model, score_date) DO UPDATE "
                "SET dag_run_id = EXCLUDED.dag_run_id, claimed_at = now(), heartbeat_at = now() "
                "WHERE l.dag_run_id = EXCLUDED.dag_run_id OR l.heartbeat_at < now() - make_interval(mins => %s) "
                "RETURNING 1"
            ).format(l=leases),
            (tables.model, day, run_id, timeout_minutes),
        )
        won = cur.fetchone() is not None
        if not won:
            cur.execute(
                sql.SQL(
                    "SELECT dag_run_id, claimed_at, heartbeat_at FROM {} "
                    "WHERE model = %s AND score_date = %s FOR UPDATE"
                ).format(leases),
                (tables.model, day),
            )
            holder, claimed_at, heartbeat_at = cur.fetchone()
            if holder_alive is not None and not holder_alive(holder):
                log.warning("taking over the claim on %s %s from finished DAG run %s", tables.model, day, holder)
                cur.execute(
                    sql.SQL(
                        "UPDATE {} SET dag_run_id = %s, claimed_at = now(), heartbeat_at = now() "
                        "WHERE model = %s AND score_date = %s"
                    ).format(leases),
                    (run_id, tables.model, day),
                )
            else:
                raise ScoreDateBusyError(
                    f"{tables.model} scores for {day} are being written by DAG run {holder} "
                    f"(claimed {claimed_at:%Y-%m-%d %H:%M:%S %Z}, last sign of life {heartbeat_at:%H:%M:%S %Z}); "
                    f"run {run_id} will not interleave with it. It retries later; the claim lapses "
                    f"{timeout_minutes} min after that run's last sign of life."
                )
        dropped = _drop_staging(cur, tables, day)
    if dropped:
        log.info("dropped %d staging table(s) left by earlier attempts: %s", len(dropped), ", ".join(dropped))
    return Lease(conn, tables, day, run_id, _last=time.monotonic())


def release(conn: connection, tables: Tables, day: date, run_id: str) -> None:
    """Give up the claim (after a failure that published nothing) and drop this date's staging tables."""
    with conn, conn.cursor() as cur:
        cur.execute(
            _sql()
            .SQL("DELETE FROM {} WHERE model = %s AND score_date = %s AND dag_run_id = %s RETURNING 1")
            .format(tables.leases),
            (tables.model, day, run_id),
        )
        if cur.fetchone() is not None:
            _drop_staging(cur, tables, day)


def _staging_names(cur: Any, tables: Tables, day: date | None) -> list[str]:
    """Staging tables of the model (and ``day``), found by the comment each one gets when created."""
    prefix = (
        STAGING_COMMENT.format(model=tables.model, day=day, run="")
        if day
        else f"nightshift staging: model={tables.model} "
    )
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(obj_description(c.oid, 'pg_class'), %s) "
        "ORDER BY 1",
        (tables.staging_schema, prefix),
    )
    return [r[0] for r in cur.fetchall()]


def _drop_staging(cur: Any, tables: Tables, day: date) -> list[str]:
    """Drop every staging table of (model, day), whatever run left it. Call only while holding the claim."""
    names = _staging_names(cur, tables, day)
    for name in names:
        cur.execute(_sql().SQL("DROP TABLE IF EXISTS {}").format(tables.ident(tables.staging_schema, name)))
    return names


def staging_tables(conn: connection, tables: Tables, day: date | None = None) -> list[str]:
    """Names of the staging tables present for the model (and ``day``)."""
    with conn, conn.cursor() as cur:
        return _staging_names(cur, tables, day)


# --- staging -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constants:
    """The values every row of a day shares; staging tables get them as column defaults."""

    day: date
    model_name: str
    model_version: int
    mlflow_run_id: str
    dag_run_id: str


def _staging_comment(cur: Any, tables: Tables, consts: Constants, name: str) -> None:
    comment = STAGING_COMMENT.format(model=tables.model, day=consts.day, run=consts.dag_run_id)
    cur.execute(
        _sql()
        .SQL("COMMENT ON TABLE {} IS {}")
        .format(tables.ident(tables.staging_schema, name), _sql().Literal(comment))
    )


def create_scores_staging(cur: Any, tables: Tables, consts: Constants, shard: int) -> str:
    """(Re-)create one shard's scores staging table in the current transaction; returns its name.

    Columns that are the same for the whole day get defaults, so COPY sends only key, score, label.
    """
    sql = _sql()
    name = tables.staging(consts.day, consts.dag_run_id, f"s{shard}")
    ident = tables.ident(tables.staging_schema, name)
    defaults = {
        "score_date": consts.day,
        "model_name": consts.model_name,
        "model_version": consts.model_version,
        "mlflow_run_id": consts.mlflow_run_id,
        "dag_run_id": consts.dag_run_id,
    }
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    cur.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, _columns_ddl(tables)))
    for col, value in defaults.items():
        cur.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                ident, sql.Identifier(col), sql.Literal(value)
            )
        )
    cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN scored_at SET DEFAULT now()").format(ident))
    # Matches the partition bound, so attaching needs no scan under the exclusive lock; checked per
    # row during COPY, where it costs nothing measurable, instead of by a scan afterwards.
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (score_date >= {} AND score_date < {})").format(
            ident, sql.Identifier(f"{name}_bound"), sql.Literal(consts.day), sql.Literal(consts.day + timedelta(days=1))
        )
    )
    _staging_comment(cur, tables, consts, name)
    return name


def create_quarantine_staging(cur: Any, tables: Tables, consts: Constants, shard: int) -> str:
    """(Re-)create one shard's quarantine staging table in the current transaction; returns its name."""
    sql = _sql()
    name = tables.staging(consts.day, consts.dag_run_id, f"q{shard}")
    ident = tables.ident(tables.staging_schema, name)
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
    cur.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
            ident, tables.ident(tables.schema, tables.quarantine)
        )
    )
    for col, value in (("score_date", consts.day), ("dag_run_id", consts.dag_run_id)):
        cur.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                ident, sql.Identifier(col), sql.Literal(value)
            )
        )
    _staging_comment(cur, tables, consts, name)
    return name


def copy_scores_sql(tables: Tables, staging: str, binary: bool) -> Any:
    sql = _sql()
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in (tables.key, *COPY_COLUMNS))
    # FREEZE: the table was created in this transaction, so rows can be written frozen (no later
    # hint-bit rewrite or anti-wraparound vacuum of a freshly loaded day).
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT {}, FREEZE)").format(
        tables.ident(tables.staging_schema, staging), cols, sql.SQL("binary" if binary else "csv")
    )


def copy_quarantine_sql(tables: Tables, staging: str) -> Any:
    sql = _sql()
    return sql.SQL("COPY {} (entity_key, rule, row) FROM STDIN WITH (FORMAT csv)").format(
        tables.ident(tables.staging_schema, staging)
    )


# --- assemble, check, publish --------------------------------------------------------------------


def duplicate_keys_error(tables: Tables, day: date, detail: str | None) -> DataValidationError:
    return DataValidationError(
        f"input of {tables.model} for {day} has duplicate {tables.key} values; each entity may be scored "
        f"once per day ({detail or 'duplicate key'}). Nothing was published; fix the landing file and "
        "re-run the date."
    )


def assemble(conn: connection, tables: Tables, consts: Constants, shards: int) -> str:
    """Merge the shards' staging tables into one table shaped like the day's partition.

    Builds the primary key the partition needs, so attaching does not build it under the lock.

    Returns:
        The staging table that will become the partition.

    Raises:
        DataValidationError: the day holds an entity key twice.
    """
    from psycopg2 import errors

    sql = _sql()
    day, run = consts.day, consts.dag_run_id
    target = tables.staging(day, run, "s0")
    t_ident = tables.ident(tables.staging_schema, target)
    try:
        with conn, conn.cursor() as cur:
            for i in range(1, shards):
                other = tables.ident(tables.staging_schema, tables.staging(day, run, f"s{i}"))
                cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(t_ident, other))
                cur.execute(sql.SQL("DROP TABLE {}").format(other))
            for col in ("score_date", "model_name", "model_version", "mlflow_run_id", "dag_run_id", "scored_at"):
                cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(t_ident, sql.Identifier(col)))
            # Built after the load: one sorted bulk build costs a fraction of per-row index upkeep.
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}, score_date)").format(
                    t_ident, sql.Identifier(f"{target}_pkey"), sql.Identifier(tables.key)
                )
            )
            # No ANALYZE here: autovacuum analyzes the new partition within a minute of the load, and
            # doing it inline cost 15 % of a whole load.
    except errors.UniqueViolation as exc:
        raise duplicate_keys_error(tables, day, exc.diag.message_detail) from None
    return target


def count_rows(conn: connection, schema: str, table: str) -> int:
    sql = _sql()
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
        return int(cur.fetchone()[0])


def publish_quarantine_only(conn: connection, tables: Tables, consts: Constants, shards: int) -> int:
    """Keep a failed run's quarantined rows (under its DAG run id) and publish no scores."""
    sql = _sql()
    q = tables.ident(tables.schema, tables.quarantine)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE score_date = %s AND dag_run_id = %s").format(q),
            (consts.day, consts.dag_run_id),
        )
        n = _move_quarantine(cur, tables, consts, shards)
    release(conn, tables, consts.day, consts.dag_run_id)
    return n


def _move_quarantine(cur: Any, tables: Tables, consts: Constants, shards: int) -> int:
    sql = _sql()
    q = tables.ident(tables.schema, tables.quarantine)
    moved = 0
    for i in range(shards):
        staged = tables.ident(tables.staging_schema, tables.staging(consts.day, consts.dag_run_id, f"q{i}"))
        cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(q, staged))
        moved += cur.rowcount
        cur.execute(sql.SQL("DROP TABLE {}").format(staged))
    return moved


def publish(
    conn: connection, tables: Tables, consts: Constants, staged: str, shards: int, lock_timeout_s: int = 60
) -> dict[str, Any]:
    """Make ``staged`` the day's partition and replace the day's quarantine, in one transaction.

    Raises:
        ScoreDateBusyError: this run no longer holds the claim on the date.
    """
    sql = _sql()
    day, run = consts.day, consts.dag_run_id
    part = tables.partition(day)
    parent = tables.ident(tables.schema, tables.scores)
    part_ident = tables.ident(tables.schema, part)
    with conn, conn.cursor() as cur:
        # Detaching takes an exclusive lock on the scores table: wait a bounded time for analysts'
        # running queries rather than queue every new reader behind us indefinitely.
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_s)}s")))
        cur.execute(
            sql.SQL("SELECT dag_run_id FROM {} WHERE model = %s AND score_date = %s FOR UPDATE").format(tables.leases),
            (tables.model, day),
        )
        row = cur.fetchone()
        if row is None or row[0] != run:
            raise ScoreDateBusyError(
                f"DAG run {run} no longer holds the claim on {tables.model} scores for {day} "
                f"(held by {row[0] if row else 'nobody'}); nothing was published"
            )
        cur.execute("SELECT to_regclass(%s)", (f'"{tables.schema}"."{part}"',))
        replaced = cur.fetchone()[0] is not None
        if replaced:
            cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, part_ident))
            cur.execute(sql.SQL("DROP TABLE {}").format(part_ident))
        staged_ident = tables.ident(tables.staging_schema, staged)
        cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(staged_ident, sql.Identifier(tables.schema)))
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(tables.ident(tables.schema, staged), sql.Identifier(part))
        )
        cur.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                parent, part_ident, sql.Literal(day), sql.Literal(day + timedelta(days=1))
            )
        )
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(part_ident, sql.Identifier(f"{staged}_bound")))
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                part_ident, sql.Identifier(f"{staged}_pkey"), sql.Identifier(f"{part}_pkey")
            )
        )

        cur.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                part_ident,
                sql.Literal(f"{tables.model} scores for {day}: model version {consts.model_version}, DAG run {run}"),
            )
        )
        if role_exists(cur, ANALYST_ROLE):
            cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(part_ident, sql.Identifier(ANALYST_ROLE)))
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE score_date = %s").format(tables.ident(tables.schema, tables.quarantine)),
            (day,),
        )
        quarantined = _move_quarantine(cur, tables, consts, shards)
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE model = %s AND score_date = %s").format(tables.leases),
            (tables.model, day),
        )
    log.info("published %s.%s (%s)", tables.schema, part, "replaced the previous rows" if replaced else "new day")
    return {"partition": f"{tables.schema}.{part}", "replaced": replaced, "quarantined": quarantined}
