"""What an on-call alert says, and its row in ``monitoring.alerts``.

One alert per final failure: the row's unique key (kind, DAG, run, task, map index, try) means that
when two things report the same failure (the task's own callback, and the scheduler's callback for a
task that stopped heartbeating), only the first one is sent.

This module never imports Airflow: the notifiers in ``plugins/nightshift_airflow/notifiers.py``
build an :class:`Alert` from an Airflow context and send it.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.nightshift.pg import MONITORING_DDL_LOCK, insert_row, run_ddl

if TYPE_CHECKING:
    from psycopg2.extensions import connection

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"

KINDS = ("task_failure", "dag_failure", "deadline_missed", "drift", "performance")


def runbook_anchor(dag_id: str, task_id: str | None) -> str:
    """The runbook section for a task: ``<kind>-<task_id>`` (e.g. ``scoring-resolve_run``).

    ``docs/runbook.md`` has an ``<a id="...">`` for every task of every generated DAG (a test checks it).
    """
    kind = dag_id.rsplit("_", 1)[-1] if "_" in dag_id else dag_id
    if kind == "spec":  # <file>_invalid_spec
        kind = "invalid_spec"
    return f"{kind}-{task_id}" if task_id else kind


def runbook_url(base: str | None, dag_id: str, task_id: str | None) -> str:
    """A link to the runbook section for ``task_id`` of ``dag_id``; ``base`` defaults to this checkout's file."""
    return f"{(base or RUNBOOK.as_uri()).split('#')[0]}#{runbook_anchor(dag_id, task_id)}"


def first_line(error: BaseException | str | None) -> str:
    """The first non-empty line of an error (our messages put the rule and the observed value there)."""
    if error is None:
        return "unknown error"
    text = str(error).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if isinstance(error, BaseException):
        line = line or type(error).__name__
    return (line or "unknown error")[:1000]


@dataclass
class Alert:
    """One thing on-call must know about."""

    kind: str
    dag_id: str
    run_id: str
    error: str
    task_id: str = ""
    map_index: int = -1
    logical_date: str | None = None
    try_number: int = 0
    max_tries: int | None = None
    log_url: str | None = None
    runbook_url: str | None = None
    model: str | None = None
    channels: list[str] = field(default_factory=list)

    @property
    def what(self) -> str:
        where = f"{self.dag_id}.{self.task_id}" if self.task_id else self.dag_id
        if self.map_index >= 0:
            where += f"[{self.map_index}]"
        return {
            "task_failure": f"{where} failed",
            "dag_failure": f"{where} run failed",
            "deadline_missed": f"{where} missed its deadline",
            "drift": f"{where}: drift, retraining requested",
            "performance": f"{where}: performance decay, retraining requested",
        }.get(self.kind, f"{where}: {self.kind}")

    @property
    def subject(self) -> str:
        return f"[nightshift] {self.what}: {self.error}"[:250]

    def facts(self) -> list[tuple[str, str]]:
        tries = f"{self.try_number} of {self.max_tries + 1}" if self.max_tries is not None else str(self.try_number)
        rows = [
            ("DAG", self.dag_id),
            ("Task", self.task_id + (f" (map index {self.map_index})" if self.map_index >= 0 else "")),
            ("Run", self.run_id),
            ("Logical date", self.logical_date or "none (manual or asset-triggered run)"),
            ("Try", tries if self.kind == "task_failure" else "-"),
            ("Error", self.error),
            ("Log", self.log_url or "-"),
            ("Runbook", self.runbook_url or "-"),
        ]
        return [(k, v) for k, v in rows if v]

    def text(self) -> str:
        width = max(len(k) for k, _ in self.facts())
        return "\n".join([self.what, ""] + [f"{k.ljust(width)}  {v}" for k, v in self.facts()]) + "\n"

    def html(self) -> str:
        def cell(key: str, value: str) -> str:
            v = html.escape(value)
            if value.startswith(("http://", "https://", "file://")):
                v = f'<a href="{v}">{v}</a>'
            return f"<tr><th align='left'>{html.escape(key)}</th><td>{v}</td></tr>"

        rows = "".join(cell(k, v) for k, v in self.facts())
        return f"<h3>{html.escape(self.what)}</h3><table>{rows}</table>"

    def log_line(self) -> str:
        return (
            f"ALERT {self.what} (run {self.run_id}, try {self.try_number}): {self.error} "
            f"| log: {self.log_url} | runbook: {self.runbook_url}"
        )


DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.alerts (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    model text,
    dag_id text NOT NULL,
    task_id text NOT NULL DEFAULT '',
    map_index integer NOT NULL DEFAULT -1,
    run_id text NOT NULL,
    logical_date text,
    try_number integer NOT NULL DEFAULT 0,
    max_tries integer,
    error text NOT NULL,
    log_url text,
    runbook_url text,
    channels text[] NOT NULL DEFAULT '{}',
    UNIQUE (kind, dag_id, run_id, task_id, map_index, try_number)
);
COMMENT ON TABLE monitoring.alerts IS
    'Nightshift: every alert sent to on-call (task failures, missed deadlines, drift, decay)';
"""


def ensure_table(conn: connection) -> None:
    """Create ``monitoring.alerts`` (idempotent); the analyst role may read it when that role exists."""
    run_ddl(conn, MONITORING_DDL_LOCK, DDL, grant_schema="monitoring")


def record(conn: connection, alert: Alert) -> bool:
    """Insert the alert's row; False when the same failure was already recorded (do not send it twice)."""
    ensure_table(conn)
    with conn, conn.cursor() as cur:
        insert_row(
            cur,
            "monitoring.alerts",
            asdict(alert),
            "ON CONFLICT (kind, dag_id, run_id, task_id, map_index, try_number) DO NOTHING RETURNING id",
        )
        return cur.fetchone() is not None


def set_channels(conn: connection, alert: Alert) -> None:
    """Record which channels the alert reached."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE monitoring.alerts SET channels = %s WHERE kind = %s AND dag_id = %s AND run_id = %s "
            "AND task_id = %s AND map_index = %s AND try_number = %s",
            (alert.channels, alert.kind, alert.dag_id, alert.run_id, alert.task_id, alert.map_index, alert.try_number),
        )


def task_alerts(conn: connection, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The task-failure alerts already recorded for a DAG run."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT task_id, map_index, try_number, error FROM monitoring.alerts "
            "WHERE kind = 'task_failure' AND dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        )
        return [dict(zip(("task_id", "map_index", "try_number", "error"), r, strict=True)) for r in cur.fetchall()]
