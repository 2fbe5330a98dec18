"""Running DAGs in-process with ``dag.test()`` and reading what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any


@dataclass
class RunResult:
    state: str
    tasks: dict[str, str | None]
    errors: dict[str, str] = field(default_factory=dict)

    def failed_task(self) -> str | None:
        failed = [t for t, s in self.tasks.items() if s == "failed"]
        return failed[0] if failed else None


def run_dag(dag: Any, run_date: date, conf: dict[str, Any] | None = None) -> RunResult:
    """Run ``dag`` for ``run_date`` with ``dag.test()``, recording each failed task's exception.

    The recorder is appended to the tasks' own failure callbacks: it sees the same context the
    alert notifier sees.
    """
    errors: dict[str, str] = {}

    def record(context: Any) -> None:
        errors[context["ti"].task_id] = str(context.get("exception"))

    for task in dag.tasks:
        task.retries = 0
        callbacks = task.on_failure_callback or []
        task.on_failure_callback = [*(callbacks if isinstance(callbacks, list) else [callbacks]), record]
    dr = dag.test(logical_date=datetime.combine(run_date, time(6, 0), tzinfo=UTC), run_conf=conf or {})
    tasks = {ti.task_id: (ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in dr.get_task_instances()}
    state = dr.state.value if hasattr(dr.state, "value") else str(dr.state)
    return RunResult(state=state, tasks=tasks, errors=errors)
