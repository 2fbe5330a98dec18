"""Failure notifications for on-call.

``FailureAlert`` is attached to every task of every Nightshift DAG. It writes one structured line
that says what broke, where, on which try, and the error's first line. Channels (mail, Slack, the
alerts table) plug in here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)


def alert_fields(context: Context) -> dict[str, Any]:
    """The facts an on-call engineer needs, from a task's failure context."""
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0] if exc else "unknown error"
    dag_run = context.get("dag_run")
    return {
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id") or getattr(dag_run, "run_id", None),
        "logical_date": str(context.get("logical_date") or getattr(dag_run, "run_after", "")),
        "try_number": getattr(ti, "try_number", None),
        "max_tries": getattr(ti, "max_tries", None),
        "error": first_line[:500],
        "log_url": getattr(ti, "log_url", None),
    }


class FailureAlert(BaseNotifier):
    """Notify on a task's final failure."""

    template_fields = ()

    def notify(self, context: Context) -> None:
        try:
            f = alert_fields(context)
            log.error(
                "ALERT %(dag_id)s.%(task_id)s failed (run %(run_id)s, try %(try_number)s): %(error)s | log: "
                "%(log_url)s",
                f,
            )
        except Exception:  # a notifier must never hide the task's own failure
            log.exception("failure notifier could not run")
