"""Operators of shadow challengers (``promotion.mode: shadow``): score the day with ``@challenger`` into
the shadow table, measure both versions on each labelled day, and the live gate."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from nightshift_airflow.operators.base import DataOperator, NightshiftOperator
from nightshift_airflow.operators.monitoring import _DayOperator, event_dates

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.spec import ModelSpec


class ScoreShadowOperator(DataOperator, NightshiftOperator):
    """Score each newly published day with the challenger in shadow into ``<schema>.<model>_shadow_scores``.

    The days are the ``run_date`` param, else the days of the ``<model>_scores`` Asset events that
    started the run (the champion's publish). Skipped when no challenger is in shadow. This runs in its
    own DAG: its failure alerts on-call and never fails or delays the champion's publish.

    Args:
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI of the runs' files (templated).
    """

    template_fields = ("model", "landing_root", "work_root")

    def __init__(self, *, landing_root: str, work_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root
        self.work_root = work_root

    def days(self, context: Context) -> list[date]:
        from include.nightshift.errors import ParamsError

        value = context["params"].get("run_date")
        if not value:
            return event_dates(context)
        try:
            return [date.fromisoformat(str(value))]
        except ValueError:
            raise ParamsError(f"param 'run_date' must be a date YYYY-MM-DD, got {value!r}") from None

    def catch_up(self, spec: ModelSpec) -> list[date]:
        """Published days the challenger in shadow has not scored yet (an Asset event can reach no run)."""
        from include.nightshift.scoring.shadow import days_to_catch_up
        from include.nightshift.shadow import ensure_tables, in_shadow

        challenger = in_shadow(self.mlflow, spec)
        if challenger is None:
            return []
        with self.warehouse() as conn:
            ensure_tables(conn)
            missing = days_to_catch_up(conn, spec, int(challenger.version))
        if missing:
            self.log.info("shadow: catching up %s, published with no shadow scores yet", ", ".join(map(str, missing)))
        return missing

    def run(self, context: Context, spec: ModelSpec) -> list[dict[str, Any]]:
        from include.nightshift.scoring.shadow import score_day

        days = self.days(context)
        if not context["params"].get("run_date"):
            days = sorted(set(days) | set(self.catch_up(spec)))
        if not days:
            raise AirflowSkipException("no published day to score in shadow (no run_date, no Asset event)")
        out = []
        for day in days:
            # another run's claim on the day is taken over only once it times out (scoring.lease_timeout_minutes)
            scored = score_day(self.storage, self.mlflow, self.warehouse, spec, self.paths, day, context["run_id"])
            if scored is None:
                raise AirflowSkipException(f"no challenger of {spec.name} in shadow: nothing to score")
            self.log.info(
                "shadow: version %s scored %d rows of %s (%d quarantined) into %s",
                scored.version,
                scored.rows,
                day,
                scored.quarantined_rows,
                scored.partition,
            )
            out.append(scored.as_dict())
        return out


class MeasureShadowOperator(_DayOperator):
    """Realised metrics of the champion and the challenger in shadow on the same labelled rows of the day
    whose labels have now landed, into ``monitoring.shadow_performance``; returns why not when it cannot."""

    template_fields = ("model", "day", "landing_root", "work_root", "reports_root")

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import shadow

        day = self.monitored
        labelled = day.labelled_date.isoformat()
        if self.land(spec, "labels", day.labelled_date) == 0:
            return {"score_date": labelled, "skipped": "no labels in the source yet"}
        with self.warehouse() as conn:
            measured = shadow.measure_day(self.storage, self.mlflow, conn, spec, day, context["run_id"])
        if isinstance(measured, str):
            self.log.info("no shadow comparison for %s: %s", labelled, measured)
            return {"score_date": labelled, "skipped": measured}
        metric = spec.headline_metric
        self.log.info(
            "shadow %s on %d labelled rows: champion version %s %s %.4f, challenger version %s %s %.4f",
            labelled,
            measured.rows,
            measured.champion_version,
            metric,
            measured.champion.get(metric, float("nan")),
            measured.challenger_version,
            metric,
            measured.challenger.get(metric, float("nan")),
        )
        return {
            "score_date": labelled,
            "rows": measured.rows,
            "champion": measured.champion.get(metric),
            "challenger": measured.challenger.get(metric),
        }


class ShadowGateOperator(NightshiftOperator):
    """The gate's rules on the live days: once ``promotion.shadow_days`` labelled days exist, compare the
    challenger in shadow with the champion, pooled over those days.

    Skipped while there is no challenger in shadow or too few days. A rejection retires the challenger
    (tag ``nightshift.shadow = retired`` with the reason, a ``monitoring.shadow_decisions`` row) and the
    promotion is skipped; a pass goes on to the promotion (after the approval when the spec asks).
    """

    def __init__(self, *, measured: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.measured = measured

    template_fields = ("model", "measured")

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import shadow

        with self.warehouse() as conn:
            decision = shadow.decide_live(self.mlflow, conn, spec)
            if decision.status in ("none", "pending"):
                raise AirflowSkipException(decision.summary)
            if not decision.passed:
                step = shadow.Step(context["dag"].dag_id, context["run_id"])
                shadow.end_shadow(conn, self.mlflow, spec, decision, step)
                self.log.info("retired %s version %s: %s", spec.name, decision.version, decision.summary)
        self.log.info("%s version %s: %s", spec.name, decision.version, decision.summary)
        return {
            **decision.as_dict(),
            "verdict": decision.status,
            "live": True,
            "champion_version": decision.champion_version,
        }
