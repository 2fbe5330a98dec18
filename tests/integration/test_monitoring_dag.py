"""The monitoring DAG and the on-call alerts with ``dag.test()``: real Postgres, MLflow and SMTP server.

Models of this module: ``watcher`` (a copy of churn with a trained champion) and ``silent`` (never
trained, so its scoring fails in ``resolve_run``). Mail goes to a real aiosmtpd server on loopback.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest

from tests.conftest import DATA_END, free_port
from tests.conftest import smtp_server as real_smtp_server
from tests.integration.helpers import query, run_dag, train_champion, use_models_dir

pytestmark = pytest.mark.integration

DAY = DATA_END - timedelta(days=1)  # a clean day
LABELLED = DAY - timedelta(days=7)  # its labels have landed (label_delay_days is 7)
DRIFTED = DATA_END + timedelta(days=3)  # a day written by this module, with drift injected
ONCALL = "ml-oncall@example.com"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from include.nightshift.spec import DEFAULT_MODELS_DIR

    d = tmp_path_factory.mktemp("models")
    src = (DEFAULT_MODELS_DIR / "churn.yaml").read_text().replace("email_to: []", f"email_to: [{ONCALL}]")
    assert ONCALL in src
    shutil.copy(DEFAULT_MODELS_DIR / "churn.yaml", d / "churn.yaml")
    for name in ("watcher", "silent"):
        (d / f"{name}.yaml").write_text(src.replace("\nname: churn\n", f"\nname: {name}\n"))
    restore = use_models_dir(d)
    yield d
    restore()


@pytest.fixture(scope="module")
def watcher(models_dir, landing, mlflow_client):
    from include.nightshift.spec import load_model

    spec = load_model("watcher")
    train_champion(mlflow_client, spec, landing, DATA_END)
    return spec


@pytest.fixture(scope="module")
def drifted_day(watcher, landing):
    """Features for DRIFTED with the sample generator's drift (charges, contracts, support calls)."""
    from include.nightshift.sample import SampleOptions, _population, features_for_day
    from include.nightshift.storage import Storage

    opts = SampleOptions(start=DATA_END - timedelta(days=41), end=DRIFTED, drift_from=DRIFTED)
    df, _ = features_for_day(_population(opts.population, opts.seed), DRIFTED, opts)
    Storage().write_parquet(df, watcher.landing.features(landing, DRIFTED.isoformat()))
    return DRIFTED


def score(spec, day):
    from nightshift_airflow.factory import scoring_dag

    result = run_dag(scoring_dag(spec), day, conf={"run_date": day.isoformat()})
    assert result.state == "success", result


def monitor(spec, day):
    from nightshift_airflow.factory import monitoring_dag

    return run_dag(monitoring_dag(spec), day, conf={"score_date": day.isoformat()})


def retraining_events(model):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalars(
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == f"{model}_retraining")
        ).all()


def test_clean_day_no_drift_realised_performance_and_no_retraining(watcher, landing, warehouse, platform):
    score(watcher, LABELLED)
    score(watcher, DAY)

    result = monitor(watcher, DAY)

    assert result.state == "success", result
    assert result.tasks["request_retraining"] == "skipped"
    assert retraining_events("watcher") == []
    (run,) = query(
        warehouse,
        "SELECT drifted_features, features, drift_share, sampled_rows, current_rows, retraining_requested, "
        "report_uri FROM monitoring.drift_runs WHERE model = 'watcher' AND score_date = %s",
        (DAY,),
    )
    assert run[:2] == (0, len(watcher.features)), run
    assert run[3] == run[4] == 2000  # a day smaller than monitoring.sample_rows is read whole
    assert run[5] is False
    feats = query(
        warehouse,
        "SELECT feature, stattest, statistic, threshold, drifted FROM monitoring.drift_features "
        "WHERE model = 'watcher' AND score_date = %s ORDER BY feature",
        (DAY,),
    )
    assert sorted(f[0] for f in feats) == sorted(watcher.feature_names)
    assert all(0 <= f[2] < f[3] and not f[4] for f in feats), feats
    assert {f[1] for f in feats} == {"Wasserstein distance (normed)", "Jensen-Shannon distance"}
    # The report is a complete HTML file under the reports root, and in the champion's MLflow run.
    html = open(run[6].removeprefix("file://")).read()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert "monthly_charges" in html
    # Realised performance of the day whose labels have landed.
    (perf,) = query(
        warehouse,
        "SELECT labelled_rows, roc_auc, precision, recall, calibration_error, decayed, reasons, mean_score, "
        "positive_rate "
        "FROM monitoring.performance WHERE model = 'watcher' AND score_date = %s",
        (LABELLED,),
    )
    assert perf[0] >= 1500, perf  # most of the day's customers have a label
    assert 0.7 < perf[1] < 0.95 and 0 < perf[2] <= 1 and 0 < perf[3] <= 1
    # Class-weighted training shifts scores up: the calibration error shows it, and is at least the
    # gap between the mean score and the positive rate.
    assert abs(perf[7] - perf[8]) <= perf[4] < 1
    assert perf[5] is False and perf[6] == []


def test_rerunning_a_day_replaces_its_rows_and_report(watcher, warehouse, mlflow_client):
    def state():
        return query(
            warehouse,
            "SELECT r.computed_at, count(f.*) FROM monitoring.drift_runs r JOIN monitoring.drift_features f "
            "USING (model, score_date) WHERE r.model = 'watcher' AND r.score_date = %s GROUP BY r.computed_at",
            (DAY,),
        )

    before = state()
    assert monitor(watcher, DAY).state == "success"
    after = state()
    assert len(after) == 1 and after[0][1] == len(watcher.features)
    assert after[0][0] > before[0][0]
    champion = mlflow_client.get_model_version_by_alias("watcher", "champion")
    logged = [a.path for a in mlflow_client.list_artifacts(champion.run_id, f"monitoring/drift/{DAY}")]
    assert logged == [f"monitoring/drift/{DAY}/drift_report.html"]


def test_a_run_without_a_date_catches_up_on_published_days_not_monitored_yet(watcher, warehouse):
    from nightshift_airflow.factory import monitoring_dag

    other = DAY - timedelta(days=1)
    score(watcher, other)  # published, never monitored; LABELLED too; DAY was monitored after its load
    ((before,),) = query(warehouse, "SELECT now()")

    result = run_dag(monitoring_dag(watcher), DAY, conf={})

    assert result.state == "success", result
    monitored = query(
        warehouse,
        "SELECT score_date FROM monitoring.drift_runs WHERE model = 'watcher' AND computed_at > %s ORDER BY 1",
        (before,),
    )
    assert [d for (d,) in monitored] == [LABELLED, other]


def test_injected_drift_is_detected_and_requests_training_through_the_asset(watcher, drifted_day, warehouse):
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    score(watcher, drifted_day)  # dag.test() also writes the bundle's DAGs, watcher_training among them
    with create_session() as session:  # as an operator would: the training DAG is switched on
        session.execute(update(DagModel).where(DagModel.dag_id == "watcher_training").values(is_paused=False))

    result = monitor(watcher, drifted_day)

    assert result.state == "success", result
    assert result.tasks["request_retraining"] == "success"
    (run,) = query(
        warehouse,
        "SELECT drift_share, drifted, retraining_requested FROM monitoring.drift_runs "
        "WHERE model = 'watcher' AND score_date = %s",
        (drifted_day,),
    )
    assert run[0] >= watcher.monitoring.drift_share and run[2] is True
    assert {"monthly_charges", "support_calls_30d", "contract_type"} <= set(run[1])
    assert {"region", "payment_method"}.isdisjoint(run[1])  # untouched by the injected drift
    # The Asset event that schedules watcher_training, with the reasons.
    (extra,) = retraining_events("watcher")
    assert any("monthly_charges" in r for r in extra["reasons"]), extra
    with create_session() as session:
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
    assert "watcher_training" in queued, "the training DAG is queued by the Asset event"
    # On-call is told (a row, and the log; no SMTP connection in this test).
    alerts = query(
        warehouse,
        "SELECT kind, error, channels FROM monitoring.alerts WHERE dag_id = 'watcher_monitoring' AND kind = 'drift'",
    )
    assert len(alerts) == 1 and "monthly_charges" in alerts[0][1] and alerts[0][2] == ["log", "table"]


def test_performance_below_the_floor_requests_training(watcher, models_dir, warehouse):
    path = models_dir / "watcher.yaml"
    original = path.read_text()
    path.write_text(original.replace("performance_floors: {roc_auc: 0.70}", "performance_floors: {roc_auc: 0.99}"))
    try:
        result = monitor(watcher, DAY)
    finally:
        path.write_text(original)

    assert result.tasks["request_retraining"] == "success", result
    (perf,) = query(
        warehouse,
        "SELECT decayed, reasons FROM monitoring.performance WHERE model = 'watcher' AND score_date = %s",
        (LABELLED,),
    )
    assert perf[0] is True
    assert "breaks monitoring.performance_floors.roc_auc (>= 0.99)" in perf[1][0]


# --- alerts ---------------------------------------------------------------------------------------


@pytest.fixture
def smtp_server():
    with real_smtp_server() as server:
        yield server


def smtp_connection(monkeypatch, port):
    extra = {"disable_ssl": True, "disable_tls": True, "from_email": "nightshift@example.com", "timeout": 5}
    extra["retry_limit"] = 1
    monkeypatch.setenv(
        "AIRFLOW_CONN_NIGHTSHIFT_SMTP",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}),
    )


@pytest.fixture
def outside_a_task(platform, monkeypatch):
    """Connections for code run by this test process itself (outside a task, the metadata DB is not read)."""
    from scripts.stack.postgres import ensure_postgres, writer_url

    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", writer_url(platform, ensure_postgres(platform)))


def silent_alerts(conn, kind="task_failure"):
    return query(
        conn,
        "SELECT kind, dag_id, task_id, run_id, try_number, max_tries, error, log_url, runbook_url, channels "
        "FROM monitoring.alerts WHERE dag_id = 'silent_scoring' AND kind = %s ORDER BY id",
        (kind,),
    )


def test_a_failing_task_sends_one_mail_with_what_on_call_needs(
    models_dir, landing, warehouse, smtp_server, monkeypatch
):
    from include.nightshift.spec import load_model
    from nightshift_airflow.factory import scoring_dag

    controller, inbox = smtp_server
    smtp_connection(monkeypatch, controller.port)

    result = run_dag(scoring_dag(load_model("silent")), DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "failed" and result.failed_task() == "resolve_run"
    (row,) = silent_alerts(warehouse)
    kind, dag_id, task_id, run_id, try_number, max_tries, error, log_url, runbook, channels = row
    assert (kind, dag_id, task_id, try_number, max_tries) == ("task_failure", "silent_scoring", "resolve_run", 1, 0)
    assert error.startswith("no @champion for model silent")
    assert channels == ["log", "table", "mail"]
    assert len(inbox.messages) == 1, "one mail per final failure"
    assert inbox.messages[0].rcpt_tos == [ONCALL]
    (mail,) = inbox.mails()
    assert "silent_scoring.resolve_run failed" in mail["Subject"] and "no @champion" in mail["Subject"]
    body = mail.get_body(("plain", "html")).get_content()
    for fact in (
        "silent_scoring",
        "resolve_run",
        run_id,
        f"{DATA_END.isoformat()}T06:00:00",  # the logical date of the run
        "1 of 1",  # try number of max
        "no @champion for model silent",
        log_url,
        "docs/runbook.md#scoring-resolve_run",
    ):
        assert fact in body, f"{fact!r} missing from the mail"
    assert "/dags/silent_scoring/runs/" in log_url and log_url.endswith("/tasks/resolve_run?try_number=1")
    assert runbook.endswith("#scoring-resolve_run")


def _has_alerts(conn):
    return query(conn, "SELECT to_regclass('monitoring.alerts')")[0][0] is not None


def test_a_broken_smtp_server_does_not_change_the_failed_state(models_dir, landing, warehouse, monkeypatch):
    from include.nightshift.spec import load_model
    from nightshift_airflow.factory import scoring_dag

    smtp_connection(monkeypatch, free_port())  # nothing listens there
    before = len(silent_alerts(warehouse)) if _has_alerts(warehouse) else 0

    result = run_dag(
        scoring_dag(load_model("silent")), DATA_END - timedelta(days=2), conf={"run_date": DAY.isoformat()}
    )

    assert result.state == "failed" and result.failed_task() == "resolve_run"
    assert result.errors["resolve_run"].startswith("no @champion for model silent")  # the original failure
    rows = silent_alerts(warehouse)
    assert len(rows) == before + 1
    assert rows[-1][-1] == ["log", "table"], "the mail channel failed and is not claimed"


def test_a_failed_run_nobody_reported_is_sent_and_a_reported_one_only_recorded(
    models_dir, warehouse, smtp_server, monkeypatch, outside_a_task
):
    from types import SimpleNamespace

    from nightshift_airflow import notifiers

    controller, inbox = smtp_server
    smtp_connection(monkeypatch, controller.port)
    monkeypatch.setattr(notifiers, "TASK_ALERT_GRACE_SECONDS", 0)
    notifier = notifiers.RunFailureAlert("silent", (ONCALL,))

    def fail(run_id):
        run = SimpleNamespace(dag_id="silent_scoring", run_id=run_id, logical_date=None)
        notifier.notify({"dag_run": run, "run_id": run_id, "reason": "task_failure"})

    fail("killed_worker_run")  # no task alert recorded for it, as when a worker is SIGKILLed
    reported = silent_alerts(warehouse)[0][3]  # a run whose failing task did alert (the mail test's)
    fail(reported)

    rows = {r[3]: r for r in silent_alerts(warehouse, "dag_failure")}
    assert "no task reported a failure (was a worker killed?)" in rows["killed_worker_run"][6]
    assert rows["killed_worker_run"][-1] == ["log", "table", "mail"]
    assert rows["killed_worker_run"][8].endswith("docs/runbook.md#scoring")
    assert "reported by the alerts of resolve_run (try 1)" in rows[reported][6]
    assert rows[reported][-1] == ["log", "table"], "already told: recorded, not sent again"
    assert len(inbox.messages) == 1
    assert "silent_scoring run failed" in inbox.messages[0].content.decode()


def test_the_missed_deadline_callback_tells_on_call(models_dir, warehouse, smtp_server, monkeypatch, outside_a_task):
    import asyncio

    from nightshift_airflow.notifiers import scores_deadline_missed

    controller, inbox = smtp_server
    smtp_connection(monkeypatch, controller.port)
    context = {  # what the scheduler hands the triggerer
        "dag_run": {"dag_id": "silent_scoring", "dag_run_id": "scheduled__late", "state": "running"},
        "deadline": {"id": "d1", "deadline_time": "2026-11-20T06:30:00+00:00"},
    }

    channels = asyncio.run(scores_deadline_missed("silent", [ONCALL], context=context))

    assert channels == "log,table,mail"
    (row,) = silent_alerts(warehouse, "deadline_missed")
    assert row[3] == "scheduled__late"
    assert "scores for silent not published by 2026-11-20T06:30:00+00:00" in row[6] and "is running" in row[6]
    assert row[8].endswith("#scoring-deadline")
    assert len(inbox.messages) == 1


def test_slack_gets_the_alert_through_its_provider_when_configured(models_dir, warehouse, monkeypatch, outside_a_task):
    """Slack's incoming webhook, stood in for by a local HTTP server (the webhook URL is the connection's)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from include.nightshift.alerts import Alert
    from nightshift_airflow.notifiers import deliver

    posts = []

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/services/T000/B000/secret"
    monkeypatch.setenv("AIRFLOW_CONN_NIGHTSHIFT_SLACK", json.dumps({"conn_type": "slackwebhook", "password": url}))
    try:
        alert = deliver(
            Alert(
                kind="task_failure",
                model="silent",
                dag_id="silent_scoring",
                task_id="publish",
                run_id="slack_test_run",
                try_number=3,
                max_tries=2,
                error="canceling statement due to lock timeout",
                runbook_url="https://docs.example/runbook.md#scoring-publish",
            )
        )
    finally:
        server.shutdown()

    assert alert.channels == ["log", "table", "slack"]  # no e-mail recipients given: no mail
    ((path, payload),) = posts
    assert path == "/services/T000/B000/secret"
    assert "silent_scoring.publish failed" in payload["text"] and "3 of 3" in payload["text"]
    assert "#scoring-publish" in payload["text"]


def test_the_nightshift_page_shows_what_the_runs_above_left(watcher, models_dir, warehouse, mlflow_client):
    """The overview of the UI page, read from the real registry and warehouse, and its HTML."""
    from include.nightshift.overview import model_overview
    from include.nightshift.spec import load_model
    from nightshift_airflow import ui

    page = model_overview(watcher, mlflow_client, warehouse)

    champion = mlflow_client.get_model_version_by_alias("watcher", "champion")
    assert page.champion.version == str(champion.version) and page.champion.since is not None
    # Since: the promotion stamp on the version (train_champion moves the alias without the promotion
    # log). No version went through the gate here; the e2e test reads a real gate decision.
    assert page.champion.since.strftime("%Y-%m-%dT%H:%M:%SZ") == champion.tags["nightshift.promoted_at"]
    assert page.gate is None
    ((day, rows),) = query(
        warehouse,
        "SELECT score_date, count(*) FROM nightshift.watcher_scores GROUP BY 1 ORDER BY 1 DESC LIMIT 1",
    )
    assert (page.scored.day, page.scored.rows, page.scored.model_version) == (day, rows, int(champion.version))
    drift = query(
        warehouse,
        "SELECT score_date, drift_share FROM monitoring.drift_runs WHERE model = 'watcher' ORDER BY score_date",
    )
    assert [(p.day, p.drift_share) for p in page.drift] == drift and len(drift) >= 2
    assert page.experiment_ids[page.drift[-1].mlflow_run_id].isdigit()
    assert page.problems == []

    # A model never trained or scored shows empty parts, not an error.
    never = model_overview(load_model("silent"), mlflow_client, warehouse)
    assert (never.champion, never.gate, never.scored, never.drift, never.problems) == (None, None, None, [], [])

    html = ui.render_overview([page, never], "http://mlflow", "http://airflow", [], page.champion.since, "admin")
    assert f'data-field="champion-version">v{champion.version}<' in html
    assert f'data-field="scored-date">{day}<' in html and f'data-field="scored-rows">{rows:,}<' in html
    assert html.count("<rect ") == len(drift)
    assert 'href="http://airflow/dags/watcher_scoring" target="_top"' in html
    assert 'data-model="silent"' in html and "trigger silent_training" in html
