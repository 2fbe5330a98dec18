"""Alerts for on-call: task failures, failed runs nobody reported, missed deadlines, drift and decay.

Every alert goes to:

- the task log (one ``ALERT`` line), always;
- a row in ``monitoring.alerts`` (the warehouse connection, ``postgres_default``), always when it
  answers; the row's unique key makes a second report of the same failure a no-op;
- mail through the SMTP provider (connection ``nightshift_smtp``) when the spec lists ``alerts.email_to``;
- Slack through the Slack provider (incoming-webhook connection ``nightshift_slack``) when it exists.

A channel that fails is logged and skipped; a notifier never raises, so it can never hide or change
the failure it reports.

Where each is attached (see ``factory/common.py`` and ``factory/scoring.py``):

- ``FailureAlert``: every task's ``on_failure_callback``. Airflow 3.3 runs it once, on the final
  failure (``on_retry_callback`` runs on the tries before), in the task's process, or in the DAG
  processor when the scheduler finds a task that stopped heartbeating (a killed worker).
- ``RunFailureAlert``: every DAG's ``on_failure_callback``: when a run fails and no task alert
  was recorded for it, on-call still hears about it.
- ``scores_deadline_missed``: the scoring DAG's Deadline Alert, run by the triggerer.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from include.nightshift.alerts import Alert, first_line, runbook_url
from nightshift_airflow.hooks import POSTGRES_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec

log = logging.getLogger(__name__)

SMTP_CONN_ID = "nightshift_smtp"
SLACK_CONN_ID = "nightshift_slack"
TASK_ALERT_GRACE_SECONDS = 10


def _warehouse() -> connection:
    from nightshift_airflow.hooks import WarehouseHook

    return WarehouseHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()


def _runbook_base() -> str | None:
    from airflow.configuration import conf

    return conf.get("nightshift", "runbook_url", fallback=None)


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def _send_mail(alert: Alert, to: list[str]) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=SMTP_CONN_ID) as hook:
        hook.send_email_smtp(to=to, subject=alert.subject, html_content=alert.html() + f"<pre>{alert.text()}</pre>")


def _send_slack(alert: Alert) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    SlackWebhookHook(slack_webhook_conn_id=SLACK_CONN_ID).send(text=f"*{alert.what}*\n```{alert.text()}```")


def deliver(alert: Alert, email_to: list[str] | tuple[str, ...] = (), send: bool = True) -> Alert:
    """Record ``alert`` and send it on every configured channel (only record it when not ``send``).

    Never raises. Returns the alert with ``channels`` filled.
    """
    from include.nightshift import alerts

    log.error("%s", alert.log_line())
    alert.channels = ["log"]
    conn = None
    try:
        conn = _warehouse()
        if not alerts.record(conn, alert):
            log.info("alert already recorded and sent for this failure: not sending it again")
            conn.close()
            return alert
        alert.channels.append("table")
    except Exception:
        log.exception("could not record the alert in monitoring.alerts; sending it anyway")
    channels: list[tuple[str, Any, bool]] = []
    if send:
        channels.append(("mail", lambda: _send_mail(alert, list(email_to)), bool(email_to) and _exists(SMTP_CONN_ID)))
        channels.append(("slack", lambda: _send_slack(alert), _exists(SLACK_CONN_ID)))
    for name, send_to, configured in channels:
        if not configured:
            continue
        try:
            send_to()
            alert.channels.append(name)
        except Exception:
            log.exception("alert channel %s failed; the alert is in the log%s", name, " and the table" if conn else "")
    if conn is not None:
        try:
            with closing(conn):
                alerts.set_channels(conn, alert)
        except Exception:
            log.exception("could not record the alert's channels")
    return alert


def _exists(conn_id: str) -> bool:
    try:
        return _connection_exists(conn_id)
    except Exception:
        log.exception("could not look up connection %s", conn_id)
        return False


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


def _error(context: Context, model: str | None, task_id: str) -> str:
    """The alert's error: the exception's first line; for a timeout, what happened and what to do."""
    from airflow.sdk.exceptions import AirflowTaskTimeout

    from include.nightshift.spec.timeouts import timeout_message

    exc = context.get("exception")
    if isinstance(exc, AirflowTaskTimeout):
        limit = getattr(context.get("task"), "execution_timeout", None)
        return timeout_message(model, task_id, limit.total_seconds() / 60 if limit else 0)
    return first_line(exc)


def task_alert(context: Context, model: str | None) -> Alert:
    """The alert for a task's final failure, from its context."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = str(getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "") or "")
    task_id = str(getattr(ti, "task_id", "") or "")
    map_index = getattr(ti, "map_index", -1)
    log_url = None
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:
        log.debug("no log url on %r", ti)
    return Alert(
        kind="task_failure",
        model=model,
        dag_id=dag_id,
        task_id=task_id,
        map_index=map_index if isinstance(map_index, int) else -1,
        run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "") or ""),
        logical_date=_iso(context.get("logical_date") or getattr(dag_run, "logical_date", None)),
        try_number=int(getattr(ti, "try_number", 0) or 0),
        max_tries=getattr(ti, "max_tries", None),
        error=_error(context, model, task_id),
        log_url=log_url,
        runbook_url=runbook_url(_runbook_base(), dag_id, task_id),
    )


class _ModelNotifier(BaseNotifier):
    """A notifier of one model's DAGs.

    Args:
        model: The model the DAG belongs to.
        email_to: Recipients (the spec's ``alerts.email_to``).
    """

    template_fields = ()

    def __init__(self, model: str | None = None, email_to: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model = model
        self.email_to = tuple(email_to)


class FailureAlert(_ModelNotifier):
    """A task's final failure: what broke, where, on which try, the error's first line, log and runbook."""

    def notify(self, context: Context) -> None:
        try:
            deliver(task_alert(context, self.model), self.email_to)
        except Exception:  # a notifier must never hide the task's own failure
            log.exception("failure notifier could not run")


class RunFailureAlert(_ModelNotifier):
    """A DAG run failed: always a ``dag_failure`` row; mail and Slack only when no task alert was recorded
    for the run (e.g. its worker was killed), so on-call hears about every failure once."""

    def notify(self, context: Context) -> None:
        try:
            self._notify(context)
        except Exception:
            log.exception("run failure notifier could not run")

    def _notify(self, context: Context) -> None:
        from include.nightshift import alerts

        dag_run = context.get("dag_run")
        dag_id = str(getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", "") or "")
        run_id = str(context.get("run_id") or getattr(dag_run, "run_id", "") or "")
        reported: list[dict[str, Any]] = []
        try:
            with closing(_warehouse()) as conn:
                alerts.ensure_table(conn)
                # A failed task's own alert runs in its process just after the task reports its state,
                # so it can land a moment after the run is marked failed: give it a few seconds.
                deadline = time.monotonic() + TASK_ALERT_GRACE_SECONDS
                while not (reported := alerts.task_alerts(conn, dag_id, run_id)) and time.monotonic() < deadline:
                    time.sleep(1)
        except Exception:
            log.exception("could not read monitoring.alerts; alerting for the run")
        reason = first_line(context.get("reason") or "the run failed")
        if reported:
            tasks = ", ".join(sorted({f"{r['task_id']} (try {r['try_number']})" for r in reported}))
            error = f"{reason}; reported by the alerts of {tasks}"
        else:
            error = (
                f"{reason}; no task reported a failure (was a worker killed?) - open the run and read the "
                "failed task's log"
            )
        deliver(
            Alert(
                kind="dag_failure",
                model=self.model,
                dag_id=dag_id,
                run_id=run_id,
                logical_date=_iso(getattr(dag_run, "logical_date", None)),
                error=error,
                runbook_url=runbook_url(_runbook_base(), dag_id, None),
            ),
            self.email_to,
            send=not reported,
        )


async def scores_deadline_missed(model: str, email_to: list[str] | None = None, context: Any = None) -> str:
    """Deadline Alert callback of ``<model>_scoring`` (runs in the triggerer): the day's scores are late."""
    import asyncio

    run = (context or {}).get("dag_run", {})
    deadline = (context or {}).get("deadline", {})
    alert = Alert(
        kind="deadline_missed",
        model=model,
        dag_id=run.get("dag_id", f"{model}_scoring"),
        run_id=run.get("dag_run_id") or run.get("run_id", ""),
        logical_date=run.get("logical_date"),
        error=f"scores for {model} not published by {deadline.get('deadline_time')} "
        f"(monitoring.scores_due_minutes after the run was queued); the run is {run.get('state')}",
        runbook_url=runbook_url(_runbook_base(), f"{model}_scoring", "deadline"),
    )
    sent = await asyncio.to_thread(deliver, alert, tuple(email_to or ()))
    return ",".join(sent.channels)


def retraining_alert(context: Context, spec: ModelSpec, kind: str, task_id: str, found: list[str]) -> Alert:
    """Tell on-call that monitoring requests retraining (``kind`` ``drift`` or ``performance``) and why."""
    dag_id = context["dag"].dag_id
    alert = Alert(
        kind=kind,
        model=spec.name,
        dag_id=dag_id,
        task_id=task_id,
        run_id=context["run_id"],
        logical_date=str(context.get("logical_date") or "") or None,
        error=f"retraining {spec.name}: " + "; ".join(found),
        log_url=context["ti"].log_url,
        runbook_url=runbook_url(_runbook_base(), dag_id, task_id),
    )
    return deliver(alert, spec.alerts.email_to)
