"""How long each kind of task may run: the defaults of ``runs.timeout_minutes`` and which task is which kind."""

from __future__ import annotations

# Each task's execution_timeout by kind of task, in minutes (runs.timeout_minutes overrides any of them).
TIMEOUT_DEFAULTS: dict[str, int] = {
    "land": 30,  # land: CSV / SQL sources to Parquet
    "validate": 30,  # validate_*: the GX suites
    "train": 120,  # build_training_set, plan_search, trial (each), train, evaluate
    "score": 60,  # score (each shard), assemble, score_shadow
    "publish": 15,  # publish: the partition swap
    "monitor": 60,  # drift, performance, request_retraining, shadow_measure
    "registry": 15,  # resolve_run, register, gate, promote, rollback
}

TASK_KINDS: dict[str, str] = {
    "land": "land",
    "build_training_set": "train",
    "train": "train",
    "evaluate": "train",
    "plan_search": "train",
    "trial": "train",
    "score": "score",
    "assemble": "score",
    "score_shadow": "score",
    "publish": "publish",
    "drift": "monitor",
    "performance": "monitor",
    "request_retraining": "monitor",
    "shadow_measure": "monitor",
}


def task_kind(task_id: str) -> str:
    """The kind of a task (a key of ``runs.timeout_minutes``) from its id; small steps are ``registry``."""
    if task_id.startswith("validate_"):
        return "validate"
    return TASK_KINDS.get(task_id, "registry")


def timeout_message(model: str | None, task_id: str, minutes: float) -> str:
    """The alert of a task stopped by its ``execution_timeout``: what happened, after how long, what to do."""
    kind = task_kind(task_id)
    spec_file = f"include/models/{model}.yaml" if model else "the model's spec"
    return (
        f"{task_id} timed out after {minutes:g} min (runs.timeout_minutes.{kind}) and was stopped; nothing it "
        f"wrote was published (a scoring day stays as it was). What to do: read the task's log for where the "
        f"time went (a slow database, MLflow or S3, or a much larger input than usual); fix that, or raise "
        f"runs.timeout_minutes.{kind} in {spec_file}, then clear the task."
    )
