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
    error_types: dict[str, str] = field(default_factory=dict)  # the exception's class: final or retryable
    run_id: str = ""
    map_indexes: dict[str, list[int]] = field(default_factory=dict)  # mapped tasks: the indexes that ran

    def failed_task(self) -> str | None:
        failed = [t for t, s in self.tasks.items() if s == "failed"]
        return failed[0] if failed else None


def run_dag(dag: Any, run_date: date, conf: dict[str, Any] | None = None) -> RunResult:
    """Run ``dag`` for ``run_date`` with ``dag.test()``, recording each failed task's exception.

    The recorder is appended to the tasks' own failure callbacks: it sees the same context the
    alert notifier sees.
    """
    errors: dict[str, str] = {}
    error_types: dict[str, str] = {}

    def record(context: Any) -> None:
        errors[context["ti"].task_id] = str(context.get("exception"))
        error_types[context["ti"].task_id] = type(context.get("exception")).__name__

    # dag.test() in Airflow 3.3 (seen on 3.3.0, not re-checked on 3.3.2) cannot finish a run of a DAG
    # with a Deadline Alert: on success it looks the alert up by its serialized form instead of its id.
    # Deadlines are the scheduler's job; the integrity tests check the DAG carries it, the callback is
    # tested on its own, and an e2e test sees one fire from a live scheduler.
    dag.deadline = None
    for task in dag.tasks:
        task.retries = 0
        callbacks = task.on_failure_callback or []
        task.on_failure_callback = [*(callbacks if isinstance(callbacks, list) else [callbacks]), record]
    dr = dag.test(logical_date=datetime.combine(run_date, time(6, 0), tzinfo=UTC), run_conf=conf or {})
    tasks = {ti.task_id: (ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in dr.get_task_instances()}
    state = dr.state.value if hasattr(dr.state, "value") else str(dr.state)
    mapped: dict[str, list[int]] = {}
    for ti in dr.get_task_instances():
        if ti.map_index >= 0:
            mapped.setdefault(ti.task_id, []).append(ti.map_index)
    mapped = {t: sorted(i) for t, i in mapped.items()}
    return RunResult(
        state=state, tasks=tasks, errors=errors, error_types=error_types, map_indexes=mapped, run_id=dr.run_id
    )


def lineage_of(stack: Any, run_id: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{task_id: {"inputs": [...], "outputs": [...]}} of the OpenLineage COMPLETE events of a DAG run,
    as the provider's file transport wrote them (tests/conftest.py)."""
    import json

    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if not stack.openlineage_file.exists():
        return found
    for line in stack.openlineage_file.read_text().splitlines():
        event = json.loads(line)
        airflow = event.get("run", {}).get("facets", {}).get("airflow") or {}
        if event.get("eventType") != "COMPLETE" or (airflow.get("dagRun") or {}).get("run_id") != run_id:
            continue
        task = found.setdefault(airflow["task"]["task_id"], {"inputs": [], "outputs": []})
        task["inputs"] += event.get("inputs") or []
        task["outputs"] += event.get("outputs") or []
    return found


def train_champion(mlflow_client: Any, spec: Any, landing: str, end: date) -> Any:
    """Train ``spec`` (logistic regression) on the window ending ``end``, register it and make it ``@champion``."""
    from include.nightshift import datasets, registry, training
    from include.nightshift.storage import Storage

    window = datasets.resolve_window(spec, end)
    ts = datasets.load_training_set(Storage(), spec, landing, window)
    trained = training.train_and_log(mlflow_client, spec, ts, window, "logistic_regression", {})
    mv = registry.register(mlflow_client, spec, trained.model_uri, trained.model_id, trained.run_id, {})
    registry.promote(mlflow_client, spec, int(mv.version), {"nightshift.promotion_reason": "test"})
    return mv


def use_models_dir(directory: Any) -> Any:
    """Point ``NIGHTSHIFT_MODELS_DIR`` at ``directory``; returns a function that restores it."""
    import os

    before = os.environ.get("NIGHTSHIFT_MODELS_DIR")
    os.environ["NIGHTSHIFT_MODELS_DIR"] = str(directory)

    def restore() -> None:
        if before is None:
            os.environ.pop("NIGHTSHIFT_MODELS_DIR", None)
        else:
            os.environ["NIGHTSHIFT_MODELS_DIR"] = before

    return restore


def query(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()
