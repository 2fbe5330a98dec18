"""Operators of the monitoring DAG: which days to look at, drift, realised performance, retraining."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import DriftReportLink
from nightshift_airflow.operators.base import DataOperator, NightshiftOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.monitoring import MonitoredDay
    from include.nightshift.sources import Kind
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


class ResolveMonitoringRunOperator(DataOperator, NightshiftOperator):
    """Decide which published days this run monitors and return one entry per day (the next tasks map over it).

    The days are: the ``score_date`` param when given; else the days of the ``<model>_scores``
    Asset events that triggered the run together with recently published days that have no drift
    result newer than their load; else the latest published day. Each must be published.

    Args:
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI of the runs' files (where CSV and SQL sources are landed) (templated).
    """

    template_fields = ("model", "landing_root", "work_root")

    def __init__(self, *, landing_root: str, work_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root
        self.work_root = work_root

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
            days, caught_up = monitoring.days_to_monitor(conn, spec, tables, self.paths, asked, event_dates(context))
        if caught_up:
            self.log.info("also monitoring published days not monitored yet: %s", caught_up)
        self.log.info("monitoring %s for %s", spec.name, ", ".join(d.score_date.isoformat() for d in days))
        return [d.as_dict() for d in days]


class _DayOperator(DataOperator, NightshiftOperator):
    """What the mapped per-day tasks share: the day they look at, and where its data is.

    Args:
        day: One entry returned by ``ResolveMonitoringRunOperator`` (templated; mapped).
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI of the runs' files (where CSV and SQL sources are landed) (templated).
        reports_root: Root URI of the reports (templated).
    """

    ui_color = "#fde9d9"

    def __init__(self, *, day: Any, landing_root: str, work_root: str, reports_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.landing_root = landing_root
        self.work_root = work_root
        self.reports_root = reports_root

    def land(self, spec: ModelSpec, kind: Kind, day: date) -> int | None:
        """Land the day's ``kind`` for CSV and SQL sources (rows landed); None for Parquet sources."""
        from include.nightshift import sources
        from nightshift_airflow.hooks import source_connection

        if not sources.needs_landing(spec):
            return None
        conn_id = spec.landing.conn_id
        connect = (lambda: source_connection(str(conn_id))) if conn_id else None
        return sources.land_day(self.storage, spec, self.paths, kind, day, connect).rows

    @cached_property
    def monitored(self) -> MonitoredDay:
        from include.nightshift.monitoring import MonitoredDay

        return MonitoredDay.from_dict(self.day)


class CheckDriftOperator(_DayOperator):
    """Evidently drift report of one scored day against the reference of the version that scored it.

    Writes the HTML report under the reports root (temporary file, then moved into place) and into
    the MLflow run of that version, and the per-feature verdicts and a summary row into
    ``monitoring.drift_features`` / ``monitoring.drift_runs`` (replacing the day's earlier rows).

    The day is compared as the version that scored it sees it (its contract's features).
    """

    template_fields = ("model", "day", "landing_root", "work_root", "reports_root")
    operator_extra_links = (DriftReportLink(),)

    def effective_spec(self) -> ModelSpec:
        return self.contract_spec(self.monitored.mlflow_run_id)

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.monitoring import check_day

        day = self.monitored
        if not self.storage.exists(day.input_uri):  # landed data cleaned up since it was scored: land it again
            self.land(spec, "features", day.score_date)
        with self.warehouse() as conn:
            check = check_day(self.storage, self.mlflow, conn, spec, day, self.reports_root, context["run_id"])
        run_url = self.mlflow_hook.run_url(check.experiment_id, day.mlflow_run_id)
        url = f"{run_url}/artifacts/{check.artifact_path}/{check.report_uri.rsplit('/', 1)[-1]}"
        context["ti"].xcom_push(key=DriftReportLink.url_key, value=url)
        self._record_lineage(spec, check.report_uri)
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

    def _record_lineage(self, spec: ModelSpec, report_uri: str) -> None:
        from include.nightshift.lineage import file_dataset

        day = self.monitored
        self.read_file(day.input_uri)
        self.read_model_version(spec.name, day.model_version)
        self.lineage.read(self.table(spec.scoring.schema_name, f"{spec.name}_scores"))
        self.lineage.wrote(file_dataset(report_uri))
        self.lineage.wrote(self.table("monitoring", "drift_runs"))


class RealisedPerformanceOperator(_DayOperator):
    """Metrics of the scores of the day whose labels have now landed (``label_delay_days`` earlier).

    Skips (returns ``skipped``) when the labels or the scores of that day are not there.
    """

    template_fields = ("model", "day", "landing_root", "work_root", "reports_root")

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.monitoring import measure_day

        day = self.monitored
        labelled = day.labelled_date.isoformat()
        if self.land(spec, "labels", day.labelled_date) == 0:
            self.log.info("no labels of %s in the source yet: nothing to measure", labelled)
            return {"score_date": labelled, "skipped": "no labels in the source yet", "retrain": False}
        if spec.monitoring.slices and not self.storage.exists(day.labelled_input_uri):
            self.land(spec, "features", day.labelled_date)  # slices group the labelled rows by these
        with self.warehouse() as conn:
            check = measure_day(self.storage, self.mlflow, conn, spec, day, context["run_id"], self.reports_root)
        if check.row is None:
            self.log.info("no realised performance for %s: %s", labelled, check.skipped)
            return {"score_date": labelled, "skipped": check.skipped, "retrain": False}
        row = check.row
        headline = spec.headline_metric
        holdout = row.holdout.get(headline)
        self.log.info(
            "%s scores of %s against %d labels: %s%s",
            spec.name,
            labelled,
            row.labelled_rows,
            ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items() if k != "labelled_rows"),
            f" (holdout {headline} {holdout:.4f})" if holdout is not None else "",
        )
        for s in check.slices:
            value = s.metrics.get(headline)
            self.log.info(
                "slice %s: %s%s",
                s.where,
                f"{headline} {value:.4f}" if value is not None else "not judged",
                f" ({s.note})" if s.note else "",
            )
        if check.reasons:
            self.log.info("DECAY: %s", "; ".join(check.reasons))
        return {
            "score_date": labelled,
            headline: row.metrics.get(headline),
            "reasons": check.reasons,
            "retrain": bool(check.reasons),
        }


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
