"""What the Nightshift page shows for each model, read from the registry and the warehouse.

One ``ModelOverview`` per spec: the champion and since when, the last gate decision and why, the
latest scored day and its rows, and the drift trend. Each part is read on its own: a part that cannot
be read (a model never trained, a warehouse not created yet) is left empty and says why in
``problems``, and the other parts still show.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from include.nightshift.registry import CHAMPION, STAMP_FORMAT, TAG, get_alias

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

DRIFT_DAYS = 30


@dataclass(frozen=True)
class Champion:
    version: str
    since: datetime | None
    kind: str | None  # gate, force or rollback (None when no promotion row names it)
    requested_by: str | None
    approved_by: str | None
    reason: str | None
    run_id: str | None  # the MLflow run that trained it


@dataclass(frozen=True)
class GateDecision:
    version: str
    verdict: str  # passed or rejected
    summary: str
    decided_at: datetime | None
    compared_with: str | None


@dataclass(frozen=True)
class ScoredDay:
    day: date
    rows: int
    model_version: int
    scored_at: datetime | None


@dataclass(frozen=True)
class DriftPoint:
    day: date
    drift_share: float
    drifted_features: int
    features: int
    threshold: float
    retraining_requested: bool
    mlflow_run_id: str


@dataclass(frozen=True)
class Realised:
    """The latest labelled day's headline metric against the version's holdout."""

    day: date
    metric: str
    value: float | None
    holdout: float | None
    labelled_rows: int
    decayed: bool


@dataclass(frozen=True)
class ShadowDay:
    """One labelled day of the challenger in shadow against the champion, on the same rows."""

    day: date
    rows: int
    metric: str
    champion_version: int
    champion: float | None
    challenger_version: int
    challenger: float | None


@dataclass(frozen=True)
class WorstSlice:
    """The judged slice value with the worst headline metric on the last day with slice results."""

    day: date
    feature: str
    value: str
    rows: int
    metric: str
    score: float | None
    breached: bool
    reasons: list[str]


@dataclass
class ModelOverview:
    model: str
    owner: str
    description: str
    target_type: str = "binary"
    champion: Champion | None = None
    gate: GateDecision | None = None
    scored: ScoredDay | None = None
    drift: list[DriftPoint] = field(default_factory=list)  # oldest first
    realised: Realised | None = None
    promotion_mode: str = "gate"
    shadow_days: int = 0  # promotion.shadow_days
    shadow: list[ShadowDay] = field(default_factory=list)  # newest first
    shadow_decision: dict[str, Any] | None = None  # the newest monitoring.shadow_decisions row
    worst_slice: WorstSlice | None = None
    experiment_ids: dict[str, str] = field(default_factory=dict)  # the latest drift run -> its experiment
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return json.loads(json.dumps(asdict(self), default=str))


def model_overview(spec: ModelSpec, client: MlflowClient, conn: connection | None) -> ModelOverview:
    """Everything the page shows for one model; ``conn`` None when the warehouse cannot be reached."""
    out = ModelOverview(spec.name, spec.owner, spec.description or "", spec.target.type)
    out.promotion_mode, out.shadow_days = spec.promotion.mode, spec.promotion.shadow_days
    promotion = _last_promotion(conn, spec, out) if conn is not None else None
    try:
        out.champion = champion(client, spec, promotion)
        out.gate = last_gate(client, spec)
    except Exception as exc:  # the registry is down or refuses: say so, show the rest
        log.warning("registry of %s unreadable: %s", spec.name, exc)
        out.problems.append(f"MLflow registry: {type(exc).__name__}: {str(exc)[:300]}")
    if conn is not None:
        _read_warehouse(conn, spec, out)
    else:
        out.problems.append("warehouse: no connection")
    try:  # the latest drift report's link needs its run's experiment
        out.experiment_ids = {
            p.mlflow_run_id: client.get_run(p.mlflow_run_id).info.experiment_id for p in out.drift[-1:]
        }
    except Exception as exc:
        out.problems.append(f"MLflow runs: {type(exc).__name__}: {str(exc)[:300]}")
    return out


def champion(client: MlflowClient, spec: ModelSpec, promotion: dict[str, Any] | None) -> Champion | None:
    """The version holding ``@champion``; since when and why from the promotion log (else its tags)."""
    mv = get_alias(client, spec.name, CHAMPION)
    if mv is None:
        return None
    version = str(mv.version)
    if promotion and promotion["to_version"] == version:
        return Champion(
            version,
            promotion["moved_at"],
            promotion["kind"],
            promotion["requested_by"],
            promotion["approved_by"],
            promotion["reason"],
            mv.run_id,
        )
    stamp = mv.tags.get(f"{TAG}.promoted_at")
    since = datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC) if stamp else None
    return Champion(
        version,
        since,
        mv.tags.get(f"{TAG}.promotion_kind"),
        mv.tags.get(f"{TAG}.requested_by"),
        mv.tags.get(f"{TAG}.approved_by"),
        mv.tags.get(f"{TAG}.promotion_reason"),
        mv.run_id,
    )


def last_gate(client: MlflowClient, spec: ModelSpec, look_back: int = 20) -> GateDecision | None:
    """The newest version that went through the gate, with its verdict and the gate's summary."""
    versions = client.search_model_versions(
        f"name = '{spec.name}'", max_results=look_back, order_by=["version_number DESC"]
    )
    for mv in versions:
        verdict = mv.tags.get(f"{TAG}.gate")
        if verdict:
            return GateDecision(
                str(mv.version),
                verdict,
                mv.tags.get(f"{TAG}.gate_summary", ""),
                datetime.fromtimestamp(mv.last_updated_timestamp / 1000, tz=UTC) if mv.last_updated_timestamp else None,
                mv.tags.get(f"{TAG}.compared_with_version"),
            )
    return None


def _last_promotion(conn: connection, spec: ModelSpec, out: ModelOverview) -> dict[str, Any] | None:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('monitoring.promotions') IS NOT NULL")
            if not cur.fetchone()[0]:
                return None
            cur.execute(
                "SELECT to_version, moved_at, kind, requested_by, approved_by, reason FROM monitoring.promotions "
                "WHERE model = %s ORDER BY id DESC LIMIT 1",
                (spec.name,),
            )
            row = cur.fetchone()
        conn.rollback()
    except Exception as exc:
        conn.rollback()
        out.problems.append(f"promotion log: {type(exc).__name__}: {str(exc)[:300]}")
        return None
    if row is None:
        return None
    keys = ("to_version", "moved_at", "kind", "requested_by", "approved_by", "reason")
    return dict(zip(keys, row, strict=True))


def _read_warehouse(conn: connection, spec: ModelSpec, out: ModelOverview) -> None:
    from include.nightshift import warehouse
    from include.nightshift.monitoring import published_day

    tables = warehouse.Tables.for_spec(spec)
    try:
        days = warehouse.partition_days(conn, tables)
        if days:
            found = published_day(conn, tables, days[-1])
            if found:
                out.scored = ScoredDay(found.score_date, found.rows, found.model_version, found.scored_at)
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('monitoring.drift_runs') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute(
                    "SELECT score_date, drift_share, drifted_features, features, drift_share_threshold, "
                    "retraining_requested, mlflow_run_id FROM monitoring.drift_runs WHERE model = %s "
                    "ORDER BY score_date DESC LIMIT %s",
                    (spec.name, DRIFT_DAYS),
                )
                out.drift = [DriftPoint(*row) for row in reversed(cur.fetchall())]
            out.realised = _realised(cur, spec)
            out.worst_slice = _worst_slice(cur, spec)
        _read_shadow(conn, spec, out)
        conn.rollback()
    except Exception as exc:
        conn.rollback()
        out.problems.append(f"warehouse: {type(exc).__name__}: {str(exc)[:300]}")


def _realised(cur: Any, spec: ModelSpec) -> Realised | None:
    """The newest row of ``monitoring.performance`` for the model, by its type's headline metric."""
    from psycopg2 import sql

    cur.execute("SELECT to_regclass('monitoring.performance') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    metric = spec.headline_metric
    cur.execute(
        sql.SQL(
            "SELECT score_date, {m}, (holdout ->> %s)::float, labelled_rows, decayed FROM monitoring.performance "
            "WHERE model = %s ORDER BY score_date DESC LIMIT 1"
        ).format(m=sql.Identifier(metric)),
        (metric, spec.name),
    )
    row = cur.fetchone()
    return Realised(row[0], metric, row[1], row[2], int(row[3]), bool(row[4])) if row else None


def _read_shadow(conn: connection, spec: ModelSpec, out: ModelOverview) -> None:
    """The shadow comparison day by day (newest challenger) and the newest shadow decision."""
    from include.nightshift import shadow

    metric = spec.headline_metric
    out.shadow = [
        ShadowDay(
            d["score_date"],
            int(d["rows"]),
            metric,
            int(d["champion_version"]),
            d["champion"].get(metric),
            int(d["challenger_version"]),
            d["challenger"].get(metric),
        )
        for d in shadow.comparison(conn, spec.name)
    ]
    out.shadow_decision = shadow.last_decision(conn, spec.name)


def _worst_slice(cur: Any, spec: ModelSpec) -> WorstSlice | None:
    """The judged slice value with the worst headline metric on the model's last day of slice results."""
    from include.nightshift.spec import HIGHER_IS_BETTER

    cur.execute("SELECT to_regclass('monitoring.slice_performance') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    metric = spec.headline_metric
    order = "ASC" if HIGHER_IS_BETTER[metric] else "DESC"
    cur.execute(
        "SELECT score_date, feature, value, labelled_rows, (metrics ->> %s)::float, breached, reasons "
        "FROM monitoring.slice_performance WHERE model = %s AND judged AND metrics ? %s AND score_date = "
        "(SELECT max(score_date) FROM monitoring.slice_performance WHERE model = %s) "
        f"ORDER BY 5 {order} LIMIT 1",
        (metric, spec.name, metric, spec.name),
    )
    row = cur.fetchone()
    return WorstSlice(row[0], row[1], row[2], int(row[3]), metric, row[4], bool(row[5]), list(row[6])) if row else None
