"""Shadow challengers: live evidence before promotion (``promotion.mode: shadow``).

A challenger that passes the offline gate while a champion exists **enters shadow**: it holds
``@challenger`` (tag ``nightshift.shadow = in_shadow``) and ``<model>_shadow`` scores each published
day with it into ``<schema>.<model>_shadow_scores``. Once a day's labels land, :func:`measure_day`
computes the realised metrics of both versions on the same labelled rows (one
``monitoring.shadow_performance`` row per role). Once ``promotion.shadow_days`` labelled days exist,
:func:`decide_live` applies the gate's rules (``gate.floors``, ``gate.max_regression``; the same
:func:`include.nightshift.gate.decide`) to the figures pooled over those days: pass → ``@champion``
moves through the promotion log with kind ``shadow``; fail → :func:`retire`. Every step is a
``monitoring.shadow_decisions`` row.

Pooling: each metric is the mean of the daily metrics weighted by the day's labelled rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from include.nightshift.pg import MONITORING_DDL_LOCK, insert_row, run_ddl
from include.nightshift.registry import CHALLENGER, TAG, get_alias

if TYPE_CHECKING:
    from datetime import date

    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from psycopg2.extensions import connection

    from include.nightshift.monitoring.days import MonitoredDay
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)

STATE_TAG = f"{TAG}.shadow"  # in_shadow, replaced, promoted, retired
REASON_TAG = f"{TAG}.shadow_reason"
Action = Literal["entered", "replaced", "promoted", "retired"]
ROLES = ("champion", "challenger")
METRIC_COLUMNS = ("roc_auc", "pr_auc", "accuracy", "f1_macro", "log_loss", "mae", "rmse", "r2")

DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.shadow_performance (
    model text NOT NULL,
    score_date date NOT NULL,
    role text NOT NULL CHECK (role IN ('champion', 'challenger')),
    model_version integer NOT NULL,
    labelled_rows integer NOT NULL,
    metrics jsonb NOT NULL,
    roc_auc double precision,
    pr_auc double precision,
    accuracy double precision,
    f1_macro double precision,
    log_loss double precision,
    mae double precision,
    rmse double precision,
    r2 double precision,
    challenger_version integer NOT NULL,
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date, role, challenger_version)
);
CREATE TABLE IF NOT EXISTS monitoring.shadow_decisions (
    id bigserial PRIMARY KEY,
    decided_at timestamptz NOT NULL DEFAULT now(),
    model text NOT NULL,
    version integer NOT NULL,
    champion_version integer,
    action text NOT NULL CHECK (action IN ('entered', 'replaced', 'promoted', 'retired')),
    reason text NOT NULL,
    days integer NOT NULL DEFAULT 0,
    figures jsonb NOT NULL DEFAULT '{}',
    dag_id text NOT NULL,
    run_id text NOT NULL
);
COMMENT ON TABLE monitoring.shadow_performance IS
    'Nightshift: realised metrics of the champion and the challenger in shadow on the same labelled rows of a day';
COMMENT ON COLUMN monitoring.shadow_performance.challenger_version IS
    'The challenger in shadow the day was compared for (its own row and the champion''s carry it)';
COMMENT ON TABLE monitoring.shadow_decisions IS
    'Nightshift: a challenger entered shadow, was replaced by a newer one, or was promoted or retired on live days';
"""


def ensure_tables(conn: connection) -> None:
    """Create ``monitoring.shadow_performance`` and ``monitoring.shadow_decisions`` (idempotent)."""
    run_ddl(conn, MONITORING_DDL_LOCK, DDL, grant_schema="monitoring")


@dataclass(frozen=True)
class Step:
    """Who moved the shadow state: the DAG and run (a ``shadow_decisions`` row's last columns)."""

    dag_id: str
    run_id: str


def record(
    conn: connection,
    spec: ModelSpec,
    version: int,
    action: Action,
    reason: str,
    step: Step,
    champion_version: int | None = None,
    days: int = 0,
    figures: dict[str, Any] | None = None,
) -> None:
    """One ``monitoring.shadow_decisions`` row."""
    ensure_tables(conn)
    row = {
        "model": spec.name,
        "version": version,
        "champion_version": champion_version,
        "action": action,
        "reason": reason,
        "days": days,
        "figures": figures or {},
        "dag_id": step.dag_id,
        "run_id": step.run_id,
    }
    with conn, conn.cursor() as cur:
        insert_row(cur, "monitoring.shadow_decisions", row)


def in_shadow(client: MlflowClient, spec: ModelSpec) -> ModelVersion | None:
    """The version in shadow: ``@challenger`` when it carries ``nightshift.shadow = in_shadow``."""
    mv = get_alias(client, spec.name, CHALLENGER)
    return mv if mv is not None and mv.tags.get(STATE_TAG) == "in_shadow" else None


@dataclass(frozen=True)
class ShadowEntry:
    version: int
    replaced: int | None

    def summary(self, model: str) -> str:
        line = f"{model} version {self.version} entered shadow"
        if self.replaced is not None:
            line += f", replacing version {self.replaced} (its shadow ended without a decision)"
        return line


def enter_shadow(
    conn: connection, client: MlflowClient, spec: ModelSpec, version: int, champion: int, reason: str, step: Step
) -> ShadowEntry:
    """Pin ``version`` as ``@challenger`` in shadow beside ``champion``; a challenger already in shadow is replaced."""
    previous = in_shadow(client, spec)
    replaced = int(previous.version) if previous is not None and int(previous.version) != version else None
    if replaced is not None:
        why = f"replaced by version {version}, a newer challenger that passed the offline gate"
        _tag(client, spec, replaced, "replaced", why)
        record(conn, spec, replaced, "replaced", why, step, champion)
    _tag(client, spec, version, "in_shadow", reason)
    client.set_registered_model_alias(spec.name, CHALLENGER, str(version))
    record(conn, spec, version, "entered", reason, step, champion)
    entry = ShadowEntry(version, replaced)
    log.info("%s", entry.summary(spec.name))
    return entry


def _tag(client: MlflowClient, spec: ModelSpec, version: int, state: str, reason: str) -> None:
    client.set_model_version_tag(spec.name, str(version), STATE_TAG, state)
    client.set_model_version_tag(spec.name, str(version), REASON_TAG, reason[:5000])


def end_shadow(
    conn: connection,
    client: MlflowClient,
    spec: ModelSpec,
    decision: LiveDecision,
    step: Step,
) -> None:
    """Close the shadow of ``decision.version``: tag it (promoted or retired, with the reason), drop
    ``@challenger``, and write the decision's row. The caller moves ``@champion`` first when it passed."""
    action: Action = "promoted" if decision.passed else "retired"
    _tag(client, spec, decision.version, action, decision.summary)
    current = get_alias(client, spec.name, CHALLENGER)
    if current is not None and int(current.version) == decision.version:
        client.delete_registered_model_alias(spec.name, CHALLENGER)
    figures = {"champion": decision.champion, "challenger": decision.challenger, "dates": decision.dates}
    record(
        conn,
        spec,
        decision.version,
        action,
        decision.summary,
        step,
        decision.champion_version,
        len(decision.dates),
        figures,
    )


@dataclass(frozen=True)
class ShadowDay:
    """The realised metrics of both versions on one labelled day's same rows."""

    score_date: date
    champion_version: int
    challenger_version: int
    rows: int
    champion: dict[str, float]
    challenger: dict[str, float]


def _role_row(day: ShadowDay, role: str, dag_run_id: str, model: str) -> dict[str, Any]:
    metrics = day.champion if role == "champion" else day.challenger
    return {
        "model": model,
        "score_date": day.score_date,
        "role": role,
        "model_version": day.champion_version if role == "champion" else day.challenger_version,
        "labelled_rows": day.rows,
        "metrics": metrics,
        **{m: metrics.get(m) for m in METRIC_COLUMNS},
        "challenger_version": day.challenger_version,
        "dag_run_id": dag_run_id,
    }


def write_day(conn: connection, model: str, day: ShadowDay, dag_run_id: str) -> None:
    """Replace the day's two ``monitoring.shadow_performance`` rows for this challenger."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM monitoring.shadow_performance "
            "WHERE model = %s AND score_date = %s AND challenger_version = %s",
            (model, day.score_date, day.challenger_version),
        )
        for role in ROLES:
            insert_row(cur, "monitoring.shadow_performance", _role_row(day, role, dag_run_id, model))


def measure_day(
    storage: Storage, client: MlflowClient, conn: connection, spec: ModelSpec, day: MonitoredDay, dag_run_id: str
) -> ShadowDay | str:
    """Both versions' realised metrics on the rows of the labelled day that both scored and that have a label.

    Returns the day written to ``monitoring.shadow_performance``, or why there is nothing to measure.
    """
    from include.nightshift.contract import load_contract
    from include.nightshift.monitoring.days import read_day_scores, scoring_version
    from include.nightshift.monitoring.performance import joined_metrics
    from include.nightshift.warehouse import Tables

    challenger = in_shadow(client, spec)
    if challenger is None:
        return "no challenger in shadow"
    labelled, version = day.labelled_date, int(challenger.version)
    shadow_version = scoring_version(conn, Tables.for_spec(spec, shadow=True), labelled)
    if shadow_version != version:
        return f"{labelled} was not scored in shadow by version {version} (found {shadow_version or 'none'})"
    champion_version = scoring_version(conn, Tables.for_spec(spec), labelled)
    if champion_version is None or not storage.exists(day.labels_uri):
        return f"no published scores or no labels for {labelled}"
    key, target = spec.entity_key, spec.target.name
    labels = storage.read_parquet(day.labels_uri, columns=[key, target]).dropna()
    frames, specs = {}, {}
    for role, v, shadow in (("champion", champion_version, False), ("challenger", version, True)):
        vspec = load_contract(client, client.get_model_version(spec.name, str(v)).run_id, spec).apply(spec)
        scores = read_day_scores(conn, Tables.for_spec(vspec, shadow=shadow), labelled)
        frames[role], specs[role] = scores.merge(labels, on=key), vspec
    common = set(frames["champion"][key]) & set(frames["challenger"][key])
    need = spec.monitoring.min_labelled_rows
    if len(common) < need:
        return f"only {len(common)} labelled rows scored by both versions (monitoring.min_labelled_rows is {need})"
    metrics = {
        role: {k: v for k, v in joined_metrics(specs[role], f[f[key].isin(common)]).items() if k != "labelled_rows"}
        for role, f in frames.items()
    }
    out = ShadowDay(labelled, champion_version, version, len(common), metrics["champion"], metrics["challenger"])
    write_day(conn, spec.name, out, dag_run_id)
    return out


@dataclass(frozen=True)
class LiveDecision:
    """The gate's rules on the live days: ``pending`` until ``shadow_days`` labelled days exist."""

    status: Literal["none", "pending", "passed", "rejected"]
    version: int = 0
    champion_version: int | None = None
    dates: list[str] = field(default_factory=list)
    rows: int = 0
    champion: dict[str, float] = field(default_factory=dict)
    challenger: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "passed": self.passed}


def pooled(rows: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Each metric's mean over days, weighted by the day's labelled rows."""
    total: dict[str, float] = {}
    weight: dict[str, int] = {}
    for n, metrics in rows:
        for k, v in metrics.items():
            if v is not None:
                total[k] = total.get(k, 0.0) + n * float(v)
                weight[k] = weight.get(k, 0) + n
    return {k: total[k] / weight[k] for k in total if weight[k]}


def read_days(conn: connection, model: str, challenger_version: int) -> list[dict[str, Any]]:
    """The shadow days of a challenger, newest first: date, rows, both versions and metrics."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.score_date, c.labelled_rows, p.model_version, p.metrics, c.model_version, c.metrics "
            "FROM monitoring.shadow_performance c JOIN monitoring.shadow_performance p "
            "ON p.model = c.model AND p.score_date = c.score_date AND p.challenger_version = c.challenger_version "
            "AND p.role = 'champion' WHERE c.model = %s AND c.role = 'challenger' AND c.challenger_version = %s "
            "ORDER BY c.score_date DESC",
            (model, challenger_version),
        )
        names = ("score_date", "rows", "champion_version", "champion", "challenger_version", "challenger")
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def decide_live(client: MlflowClient, conn: connection, spec: ModelSpec) -> LiveDecision:
    """Apply the gate's rules to the challenger in shadow, pooled over its last ``shadow_days`` labelled days."""
    from include.nightshift.gate import decide

    challenger = in_shadow(client, spec)
    if challenger is None:
        return LiveDecision("none", summary="no challenger in shadow")
    version, need = int(challenger.version), spec.promotion.shadow_days
    ensure_tables(conn)
    days = read_days(conn, spec.name, version)[:need]
    if len(days) < need:
        return LiveDecision(
            "pending",
            version,
            dates=[d["score_date"].isoformat() for d in days],
            summary=f"version {version} in shadow: {len(days)} of {need} labelled days (promotion.shadow_days)",
        )
    champ = pooled([(d["rows"], d["champion"]) for d in days])
    chall = pooled([(d["rows"], d["challenger"]) for d in days])
    gate = decide(spec.gate, chall, champ)
    dates = sorted(d["score_date"].isoformat() for d in days)
    span = f"{len(days)} live days {dates[0]}..{dates[-1]}, {sum(d['rows'] for d in days)} labelled rows"
    verdict: Literal["passed", "rejected"] = "passed" if gate.passed else "rejected"
    text = "; ".join(gate.checks if gate.passed else gate.reasons)
    return LiveDecision(
        verdict,
        version,
        int(days[0]["champion_version"]),
        dates,
        sum(d["rows"] for d in days),
        champ,
        chall,
        list(gate.reasons),
        f"shadow gate {verdict} on {span}: {text}",
    )


def comparison(conn: connection, model: str, limit: int = 14) -> list[dict[str, Any]]:
    """The shadow comparison for the page: per labelled day of the newest challenger, both versions' metrics."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('monitoring.shadow_performance')")
        if cur.fetchone()[0] is None:
            return []
        cur.execute("SELECT max(challenger_version) FROM monitoring.shadow_performance WHERE model = %s", (model,))
        (latest,) = cur.fetchone()
    return [] if latest is None else read_days(conn, model, int(latest))[:limit]


def last_decision(conn: connection, model: str) -> dict[str, Any] | None:
    """The newest ``monitoring.shadow_decisions`` row of a model (None when there is none)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('monitoring.shadow_decisions')")
        if cur.fetchone()[0] is None:
            return None
        cur.execute(
            "SELECT decided_at, version, champion_version, action, reason FROM monitoring.shadow_decisions "
            "WHERE model = %s ORDER BY id DESC LIMIT 1",
            (model,),
        )
        row = cur.fetchone()
    names = ("decided_at", "version", "champion_version", "action", "reason")
    return dict(zip(names, row, strict=True)) if row else None
