"""Operators of the monitoring DAG: which days to look at, drift, realised performance, retraining."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import DriftReportLink
from nightshift_airflow.operators.base import NightshiftOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.monitoring import MonitoredDay
    from include.nightshift.spec import ModelSpec


def event_dates(context: Context) -> list[date]:
    """The score dates carried by the Asset events that triggered this run (one per published day)."""
    days = set()
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            value = (event.extra or {}).get("score_date")
            if value:
                days.add(date.fromisoformat(str(value)))
    return sorted(days)


class ResolveMonitoringRunOperator(NightshiftOperator):
    """Decide which published days this run monitors and return one entry per day (the next tasks map over it).

    The days are: the ``score_date`` param when given; else the days of the ``<model>_scores``
    Asset events that triggered the run together with recently published days that have no drift
    result newer than their load; else the latest published day. Each must be published.

    Args:
        landing_root: Root URI of the landing partitions (templated).
    """

    template_fields = ("model", "landing_root")

    def __init__(self, *, landing_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root

    def run(self, context: Context, spec: ModelSpec) -> list[dict[str, Any]]:
        from include.nightshift import monitoring, warehouse
        from include.nightshift.errors import ParamsError

        value = context["params"].get("score_date")
        try:
            asked = date.fromisoformat(str(value)) if value else None
        except ValueError:
            raise ParamsError(f"param 'score_date' must be a date YYYY-MM-DD, got {value!r}") from None
        with self.warehouse() as conn:
            tables = warehouse.ensure_tables(conn, spec)
            monitoring.ensure_schema(conn)
            days, caught_up = monitoring.days_to_monitor(
                conn, spec, tables, self.landing_root, asked, event_dates(context)
            )
        if caught_up:
            self.log.info("also monitoring published days not monitored yet: %s", caught_up)
        self.log.info("monitoring %s for %s", spec.name, ", ".join(d.score_date.isoformat() for d in days))
        return [d.as_dict() for d in days]


class _DayOperator(NightshiftOperator):
    """What the mapped per-day tasks share: the day they look at.

    Args:
        day: One entry returned by ``ResolveMonitoringRunOperator`` (templated; mapped).
    """

    ui_color = "#fde9d9"

    def __init__(self, *, day: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.day = day

    @cached_property
    def monitored(self) -> MonitoredDay:
        from include.nightshift.monitoring import MonitoredDay

        return MonitoredDay.from_dict(self.day)


class CheckDriftOperator(_DayOperator):
    """Evidently drift report of one scored day against the reference of the version that scored it.

    Writes the HTML report under the reports root (temporary file, then moved into place) and into
    the MLflow run of that version, and the per-feature verdicts and a summary row into
    ``monitoring.drift_features`` / ``monitoring.drift_runs`` (replacing the day's earlier rows).

    Args:
        reports_root: Root URI of the reports (templated).
    """

    template_fields = ("model", "day", "reports_root")
    operator_extra_links = (DriftReportLink(),)

    def __init__(self, *, reports_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reports_root = reports_root

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.monitoring import check_day

        day = self.monitored
        with self.warehouse() as conn:
            check = check_day(self.storage, self.mlflow, conn, spec, day, self.reports_root, context["run_id"])
        run_url = self.mlflow_hook.run_url(check.experiment_id, day.mlflow_run_id)
        url = f"{run_url}/artifacts/{check.artifact_path}/{check.report_uri.rsplit('/', 1)[-1]}"
        context["ti"].xcom_push(key=DriftReportLink.url_key, value=url)
        result = check.result
        for f in result.features:
            self.log.info(
                "%-20s %-32s statistic %.4f threshold %.3f %s",
                f.feature,
                f.stattest,
                f.statistic,
                f.threshold,
                "DRIFT" if f.drifted else "ok",
            )
        self.log.info(
            "%s %s: %d of %d features drifted (share %.2f, retraining at %.2f); %d of %d rows sampled in %.1fs; "
            "report %s",
            spec.name,
            day.score_date,
            len(result.drifted),
            len(result.features),
            result.share,
            spec.monitoring.drift_share,
            result.sampled_rows,
            check.current_rows,
            check.seconds,
            check.report_uri,
        )
        return {
            "score_date": day.score_date.isoformat(),
            "drifted": result.drifted,
            "drift_share": result.share,
            "retrain": check.retrain,
            "report_uri": check.report_uri,
            "report_url": url,
        }


class RealisedPerformanceOperator(_DayOperator):
    """Metrics of the scores of the day whose labels have now landed (``label_delay_days`` earlier).

    Skips (returns ``skipped``) when the labels or the scores of that day are not there.
    """

    template_fields = ("model", "day")

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.monitoring import measure_day

        with self.warehouse() as conn:
            check = measure_day(self.storage, self.mlflow, conn, spec, self.monitored, context["run_id"])
        labelled = check.labelled_date.isoformat()
        if check.row is None:
            self.log.info("no realised performance for %s: %s", labelled, check.skipped)
            return {"score_date": labelled, "skipped": check.skipped, "retrain": False}
        row = check.row
        self.log.info(
            "%s scores of %s against %d labels: roc_auc %.4f (holdout %.4f), precision %.3f, recall %.3f, "
            "calibration error %.4f%s",
            spec.name,
            labelled,
            row.labelled_rows,
            row.roc_auc,
            row.holdout_roc_auc if row.holdout_roc_auc is not None else float("nan"),
            row.precision,
            row.recall,
            row.calibration_error,
            "; DECAY: " + "; ".join(row.reasons) if row.reasons else "",
        )
        return {"score_date": labelled, "roc_auc": row.roc_auc, "reasons": row.reasons, "retrain": bool(row.reasons)}


class RequestRetrainingOperator(NightshiftOperator):
    """Emit the ``<model>_retraining`` Asset event (which schedules ``<model>_training``) and tell on-call,
    when drift or decay crossed the spec's thresholds; otherwise skip (no event).

    Args:
        drift: The outputs of the drift tasks (templated).
        performance: The outputs of the performance tasks (templated).
    """

    template_fields = ("model", "drift", "performance")

    def __init__(self, *, drift: Any, performance: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drift = drift
        self.performance = performance

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from nightshift_airflow.notifiers import retraining_alert

        drift = [d for d in (self.drift or []) if d and d.get("retrain")]
        decay = [p for p in (self.performance or []) if p and p.get("retrain")]
        if not drift and not decay:
            raise AirflowSkipException("no drift or performance decay above the spec's thresholds: no retraining")
        by_kind = {
            "drift": [
                f"{d['score_date']}: {len(d['drifted'])} features drifted ({', '.join(d['drifted'])}), share "
                f"{d['drift_share']:.2f} >= monitoring.drift_share {spec.monitoring.drift_share}"
                for d in drift
            ],
            "performance": [f"{p['score_date']}: {r}" for p in decay for r in p["reasons"]],
        }
        for kind, found in by_kind.items():
            if found:
                retraining_alert(context, spec, kind, self.task_id, found)
        reasons = by_kind["drift"] + by_kind["performance"]
        summary: dict[str, Any] = {"model": spec.name, "reasons": reasons, "requested_by": context["run_id"]}
        for asset in self.outlets:
            context["outlet_events"][asset].extra = summary
        self.log.info("requested retraining of %s: %s", spec.name, "; ".join(reasons))
        return summary
