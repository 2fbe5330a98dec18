"""Operators of the monitoring DAG: which days to look at, drift, realised performance, retraining."""

from __future__ import annotations

from contextlib import closing
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import DriftReportLink
from nightshift_airflow.operators.base import NightshiftOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.spec import ModelSpec


def _connect(postgres_conn_id: str) -> Any:
    from nightshift_airflow.hooks import warehouse_connection

    return warehouse_connection(postgres_conn_id)


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
        postgres_conn_id: The warehouse.
    """

    template_fields = ("model", "landing_root")

    def __init__(self, *, landing_root: str, postgres_conn_id: str = "postgres_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root
        self.postgres_conn_id = postgres_conn_id

    def run(self, context: Context, spec: ModelSpec) -> list[dict[str, Any]]:
        from include.nightshift import monitoring, warehouse
        from include.nightshift.errors import NotPublishedYetError, ParamsError

        value = context["params"].get("score_date")
        try:
            asked = date.fromisoformat(str(value)) if value else None
        except ValueError:
            raise ParamsError(f"param 'score_date' must be a date YYYY-MM-DD, got {value!r}") from None
        tables = warehouse.Tables.for_spec(spec)
        out = []
        with closing(_connect(self.postgres_conn_id)) as conn:
            warehouse.ensure_tables(conn, spec)
            monitoring.ensure_schema(conn)
            days: list[date | None] = [asked]
            if asked is None:
                events = event_dates(context)
                pending = monitoring.unmonitored_days(conn, tables, spec.name)
                days = sorted(set(events) | set(pending)) or [None]  # None: the latest published day
                if set(pending) - set(events):
                    self.log.info(
                        "also monitoring published days not monitored yet: %s", sorted(set(pending) - set(events))
                    )
            for day in days:
                published = monitoring.published_day(conn, tables, day)
                if published is None:
                    raise NotPublishedYetError(
                        f"no published scores of {spec.name} for {day or 'any day'} in "
                        f"{tables.schema}.{tables.scores}: run {spec.name}_scoring for that date first "
                        "(retried, in case its scoring run is still on the way)"
                    )
                d = published["score_date"]
                labelled = d - timedelta(days=spec.target.label_delay_days)
                out.append(
                    {
                        "score_date": d.isoformat(),
                        "rows": published["rows"],
                        "model_version": str(published["model_version"]),
                        "mlflow_run_id": published["mlflow_run_id"],
                        "input_uri": spec.landing.features(self.landing_root, d.isoformat()),
                        "labelled_date": labelled.isoformat(),
                        "labels_uri": spec.landing.labels(self.landing_root, labelled.isoformat()),
                    }
                )
        self.log.info("monitoring %s for %s", spec.name, ", ".join(o["score_date"] for o in out))
        return out


class _DayOperator(NightshiftOperator):
    """What the mapped per-day tasks share: the day and the connections to read and write it."""

    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        day: Any,
        mlflow_conn_id: str = "mlflow_default",
        postgres_conn_id: str = "postgres_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.mlflow_conn_id = mlflow_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id


class CheckDriftOperator(_DayOperator):
    """Evidently drift report of one scored day against the reference of the version that scored it.

    Writes the HTML report under the reports root (temporary file, then moved into place) and into
    the MLflow run of that version, and the per-feature verdicts and a summary row into
    ``monitoring.drift_features`` / ``monitoring.drift_runs`` (replacing the day's earlier rows).

    Args:
        day: One entry returned by ``ResolveMonitoringRunOperator`` (templated; mapped).
        reports_root: Root URI of the reports (templated).
    """

    template_fields = ("model", "day", "reports_root")
    operator_extra_links = (DriftReportLink(),)

    def __init__(self, *, reports_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reports_root = reports_root

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        import os
        import tempfile
        import time

        from include.nightshift import monitoring, registry
        from include.nightshift.storage import join_uri
        from nightshift_airflow.hooks import MlflowHook, storage_from_connection

        d = self.day
        day = date.fromisoformat(d["score_date"])
        storage = storage_from_connection(self.aws_conn_id)
        hook = MlflowHook(self.mlflow_conn_id)
        client = hook.get_conn()
        started = time.monotonic()
        seed = spec.training.random_seed
        current, total = monitoring.sample_day(storage, spec, d["input_uri"], spec.monitoring.sample_rows, seed)
        reference = registry.load_reference(client, d["mlflow_run_id"])
        result = monitoring.run_evidently(spec, reference, current)
        retrain = result.share >= spec.monitoring.drift_share
        report_uri = join_uri(self.reports_root, spec.name, "drift", f"date={day.isoformat()}", monitoring.REPORT_NAME)
        storage.write_bytes(result.html.encode(), report_uri)
        artifact_path = f"monitoring/drift/{day.isoformat()}"
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, monitoring.REPORT_NAME)
            with open(local, "w") as f:
                f.write(result.html)
            registry.log_report(client, d["mlflow_run_id"], local, artifact_path)
        run = client.get_run(d["mlflow_run_id"])
        run_url = hook.run_url(run.info.experiment_id, d["mlflow_run_id"])
        url = f"{run_url}/artifacts/{artifact_path}/{monitoring.REPORT_NAME}"
        context["ti"].xcom_push(key=DriftReportLink.url_key, value=url)
        with closing(_connect(self.postgres_conn_id)) as conn:
            monitoring.write_drift(
                conn,
                monitoring.DriftRun(
                    model=spec.name,
                    score_date=day,
                    model_version=d["model_version"],
                    mlflow_run_id=d["mlflow_run_id"],
                    current_rows=total,
                    sample_seed=seed,
                    drift_share_threshold=spec.monitoring.drift_share,
                    report_uri=report_uri,
                    dag_run_id=context["run_id"],
                ),
                result,
                retrain,
            )
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
            day,
            len(result.drifted),
            len(result.features),
            result.share,
            spec.monitoring.drift_share,
            result.sampled_rows,
            total,
            time.monotonic() - started,
            report_uri,
        )
        return {
            "score_date": day.isoformat(),
            "drifted": result.drifted,
            "drift_share": result.share,
            "retrain": retrain,
            "report_uri": report_uri,
            "report_url": url,
        }


class RealisedPerformanceOperator(_DayOperator):
    """Metrics of the scores of the day whose labels have now landed (``label_delay_days`` earlier).

    Skips (returns ``skipped``) when the labels or the scores of that day are not there.

    Args:
        day: One entry returned by ``ResolveMonitoringRunOperator`` (templated; mapped).
    """

    template_fields = ("model", "day")

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import monitoring, registry, warehouse
        from nightshift_airflow.hooks import MlflowHook, storage_from_connection

        labelled = date.fromisoformat(self.day["labelled_date"])
        labels_uri = self.day["labels_uri"]
        storage = storage_from_connection(self.aws_conn_id)
        if not storage.exists(labels_uri):
            self.log.info("labels of %s have not landed (%s): nothing to measure yet", labelled, labels_uri)
            return {"score_date": labelled.isoformat(), "skipped": f"no labels at {labels_uri}", "retrain": False}
        tables = warehouse.Tables.for_spec(spec)
        with closing(_connect(self.postgres_conn_id)) as conn:
            scores = monitoring.read_day_scores(conn, tables, labelled)
            if scores.empty:
                self.log.info("%s was never scored: no realised performance for it", labelled)
                return {"score_date": labelled.isoformat(), "skipped": "no published scores", "retrain": False}
            labels = storage.read_parquet(labels_uri, columns=[spec.entity_key, spec.target.name])
            realised = monitoring.realised_performance(spec, scores, labels)
            version = str(scores["model_version"].iloc[0])
            client = MlflowHook(self.mlflow_conn_id).get_conn()
            run_id = client.get_model_version(spec.name, version).run_id
            holdout = registry.holdout_metrics(client, run_id)
            reasons = monitoring.decay_reasons(spec, realised, holdout)
            monitoring.write_performance(
                conn,
                {
                    "model": spec.name,
                    "score_date": labelled,
                    "model_version": version,
                    "labelled_rows": int(realised["labelled_rows"]),
                    **{
                        k: realised[k]
                        for k in (
                            "roc_auc",
                            "pr_auc",
                            "precision",
                            "recall",
                            "brier",
                            "calibration_error",
                            "mean_score",
                            "positive_rate",
                        )
                    },
                    "holdout_roc_auc": holdout.get("roc_auc"),
                    "decayed": bool(reasons),
                    "reasons": reasons,
                    "dag_run_id": context["run_id"],
                },
            )
        self.log.info(
            "%s scores of %s against %d labels: roc_auc %.4f (holdout %.4f), precision %.3f, recall %.3f, "
            "calibration error %.4f%s",
            spec.name,
            labelled,
            int(realised["labelled_rows"]),
            realised["roc_auc"],
            holdout.get("roc_auc", float("nan")),
            realised["precision"],
            realised["recall"],
            realised["calibration_error"],
            "; DECAY: " + "; ".join(reasons) if reasons else "",
        )
        return {
            "score_date": labelled.isoformat(),
            "roc_auc": realised["roc_auc"],
            "reasons": reasons,
            "retrain": bool(reasons),
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

        from include.nightshift.alerts import Alert, runbook_url
        from nightshift_airflow.notifiers import _runbook_base, deliver

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
        reasons = by_kind["drift"] + by_kind["performance"]
        for kind, found in by_kind.items():
            if found:
                deliver(
                    Alert(
                        kind=kind,
                        model=spec.name,
                        dag_id=context["dag"].dag_id,
                        task_id=self.task_id,
                        run_id=context["run_id"],
                        logical_date=str(context.get("logical_date") or "") or None,
                        error=f"retraining {spec.name}: " + "; ".join(found),
                        log_url=context["ti"].log_url,
                        runbook_url=runbook_url(_runbook_base(), context["dag"].dag_id, self.task_id),
                    ),
                    spec.alerts.email_to,
                )
        summary = {"model": spec.name, "reasons": reasons, "requested_by": context["run_id"]}
        for asset in self.outlets:
            context["outlet_events"][asset].extra = summary
        self.log.info("requested retraining of %s: %s", spec.name, "; ".join(reasons))
        return summary
