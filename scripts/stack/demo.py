"""The main job of ``make run``: sample data, train through the REST API, score four days, monitor them.

The facts the summaries show are read here (MLflow, the warehouse); :mod:`.summary` only prints them.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from scripts.stack import postgres, summary
from scripts.stack.api import AirflowApi, api_for
from scripts.stack.services import up

if TYPE_CHECKING:
    from include.nightshift.spec import ModelSpec
    from scripts.stack.settings import Stack

log = logging.getLogger("nightshift.stack")

SCORING_DAYS = 3  # `make run` scores the last three sample days, and the last day whose labels have landed
# The realised-performance columns the summary shows (the metrics of every target type; a model's
# own are filled, the others NULL).
PERFORMANCE_COLUMNS = (
    "score_date",
    "labelled_rows",
    "target_type",
    "roc_auc",
    "precision",
    "recall",
    "calibration_error",
    "holdout_roc_auc",
    "accuracy",
    "f1_macro",
    "log_loss",
    "rmse",
    "mae",
    "r2",
    "holdout",
)
# What the summary ranks a model's latest scores by, per target type (a numeric output column).
RANK_COLUMN = {"binary": "score", "multiclass": "score", "regression": "prediction"}


def analyst_query(spec: ModelSpec) -> str:
    """The query the summary runs as the analyst login, for the model's own key and outputs.

    Printed for the user to paste into psql; the names are the spec's validated identifiers.
    """
    key, rank, schema = spec.entity_key, RANK_COLUMN[spec.target.type], spec.scoring.schema_name
    return (
        f"SELECT {key}, round({rank}::numeric, 3) AS {rank}, score_date FROM {schema}.{spec.name}_latest_scores "
        f"ORDER BY {rank} DESC, {key} LIMIT 5"
    )


def ensure_sample_data(stack: Stack, today: date, days: int = 42) -> None:
    """Write the sample data of every file-sourced model for the days ending today (at least ``days``, and
    enough for one training window of labelled days), unless today's partition is there."""
    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_specs, models_dir
    from include.nightshift.storage import Storage

    for spec in load_specs(models_dir()):
        if spec.landing.source != "files" or not str(spec.landing.features_uri).startswith("{root}"):
            continue  # a SQL source, or data outside the landing root: nothing to generate
        if Storage().exists(spec.landing.features(stack.landing_root, today.isoformat())):
            continue
        needed = max(days, spec.training.window_days + spec.target.label_delay_days + 7)
        opts = SampleOptions(
            start=today - timedelta(days=needed - 1), end=today, label_delay_days=spec.target.label_delay_days
        )
        counts = generate(spec, stack.landing_root, opts)
        log.info("sample data of %s: %d days, %d feature rows, %d label rows", spec.name, *counts.values())


def training_facts(stack: Stack, run_id: str) -> dict[str, Any]:
    """What the training run decided, from the MLflow tracking server."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(stack.mlflow_url)
    out: dict[str, Any] = {}
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments(filter_string=f"name = 'nightshift-{stack.model}'")],
        filter_string=f"tags.`nightshift.airflow_run_id` = '{run_id}'",
    )
    if runs:
        tags = runs[0].data.tags
        out.update(
            {
                "mlflow_run_id": runs[0].info.run_id,
                "model_version": tags.get("nightshift.model_version"),
                "gate": tags.get("nightshift.gate"),
                "gate_summary": tags.get("nightshift.gate_summary"),
                "mlflow_run_url": f"{stack.mlflow_url}/#/experiments/{runs[0].info.experiment_id}/runs/"
                f"{runs[0].info.run_id}",
            }
        )
    try:
        champion = client.get_model_version_by_alias(stack.model, "champion")
        out["champion_version"] = champion.version
        mv_aliases = client.get_model_version(stack.model, out.get("model_version") or champion.version).aliases
        out["aliases"] = sorted(mv_aliases)
    except MlflowException:
        out["champion_version"] = None
    return out


def scoring_facts(stack: Stack, server: str, days: list[date]) -> dict[str, Any]:
    """Rows per scored day (as the writer) and one analyst query (as the analyst login)."""
    import psycopg2
    from psycopg2 import sql

    from include.nightshift.spec import load_model

    spec = load_model(stack.model)
    schema = spec.scoring.schema_name
    out: dict[str, Any] = {"schema": schema, "rows": {}, "quarantined": {}}
    count = sql.SQL("SELECT count(*) FROM {} WHERE score_date = %s")
    with psycopg2.connect(postgres.warehouse_url(stack, server)) as conn, conn.cursor() as cur:
        for day in days:
            for key, table in (("rows", f"{spec.name}_scores"), ("quarantined", f"{spec.name}_quarantine")):
                cur.execute(count.format(sql.Identifier(schema, table)), (day,))
                out[key][day.isoformat()] = cur.fetchone()[0]
    conn.close()
    query = analyst_query(spec)
    password = stack.secrets()["analyst_password"]
    analyst_url = postgres.warehouse_url(stack, server, postgres.ANALYST_LOGIN, password)
    with psycopg2.connect(analyst_url) as conn, conn.cursor() as cur:
        cur.execute(query)
        out["analyst_query"] = query
        out["analyst_rows"] = cur.fetchall()
    conn.close()
    out["psql_url"] = postgres.warehouse_url(stack, server, postgres.ANALYST_LOGIN)
    return out


def run(stack: Stack) -> int:
    """``make run``: bring the stack up, train, then score and monitor the sample days."""
    server = up(stack)
    today = datetime.now(UTC).date()
    ensure_sample_data(stack, today)
    api = api_for(stack)
    dag_id = f"{stack.model}_training"
    api.wait_for_dag(dag_id)
    run_id = api.trigger(dag_id, logical_date=datetime.now(UTC).isoformat())
    log.info("triggered %s run %s over the REST API", dag_id, run_id)
    result = api.wait_for_run(dag_id, run_id)
    facts = training_facts(stack, run_id)
    errors = api.failed_task_errors(dag_id, run_id) if result["state"] != "success" else {}
    summary.print_summary(stack, dag_id, run_id, result["state"], facts, errors)
    if result["state"] != "success" or not facts.get("champion_version"):
        return 1
    from include.nightshift.spec import load_model

    labelled = today - timedelta(days=load_model(stack.model).target.label_delay_days)
    days = [labelled] + [today - timedelta(days=i) for i in reversed(range(SCORING_DAYS))]
    # The monitoring DAG runs on each published day (Asset-triggered): switch it on before scoring.
    api.wait_for_dag(f"{stack.model}_monitoring")
    api.unpause(f"{stack.model}_monitoring")
    started = datetime.now(UTC)
    failed = run_scoring(stack, api, server, days)
    if failed:
        return failed
    timeout = 600.0
    monitored = wait_for_monitoring(stack, server, days, started, timeout, labelled=(labelled,))
    summary.print_monitoring_summary(stack, days, monitored, timeout)
    return 0 if len(monitored["drift"]) == len(days) else 1


def run_scoring(stack: Stack, api: AirflowApi, server: str, days: list[date]) -> int:
    """Score ``days`` with the scoring DAG (one run per day, in parallel) and print what analysts see."""
    postgres.ensure_analyst(stack, server, stack.secrets()["analyst_password"])
    dag_id = f"{stack.model}_scoring"
    api.wait_for_dag(dag_id)
    runs = {day: api.trigger(dag_id, conf={"run_date": day.isoformat()}) for day in days}
    log.info("triggered %s for %s", dag_id, ", ".join(str(d) for d in days))
    states = {day: api.wait_for_run(dag_id, run_id)["state"] for day, run_id in runs.items()}
    errors = {}
    for day, run_id in runs.items():
        if states[day] != "success":
            errors.update({f"{day} {task}": e for task, e in api.failed_task_errors(dag_id, run_id).items()})
    summary.print_scoring_summary(stack, dag_id, states, scoring_facts(stack, server, days), errors)
    return 0 if all(s == "success" for s in states.values()) else 1


def wait_for_monitoring(
    stack: Stack, server: str, days: list[date], since: datetime, timeout: float, labelled: tuple[date, ...] = ()
) -> dict[str, Any]:
    """Wait for the Asset-triggered monitoring runs of ``days``: their drift rows, and the realised
    performance of the ``labelled`` days (the performance task runs beside drift and may end later)."""
    import psycopg2

    deadline = time.monotonic() + timeout
    found: dict[date, tuple[Any, ...]] = {}
    performance: list[tuple[Any, ...]] = []
    conn = psycopg2.connect(postgres.warehouse_url(stack, server))
    conn.autocommit = True
    try:
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('monitoring.drift_runs'), to_regclass('monitoring.performance')")
                drift_table, performance_table = cur.fetchone()
                if drift_table:
                    cur.execute(
                        "SELECT score_date, drifted_features, features, drift_share, drifted, report_uri "
                        "FROM monitoring.drift_runs WHERE model = %s AND computed_at >= %s AND score_date = ANY(%s)",
                        (stack.model, since, days),
                    )
                    found = {r[0]: r for r in cur.fetchall()}
                if performance_table:
                    cur.execute(
                        f"SELECT {', '.join(PERFORMANCE_COLUMNS)} FROM monitoring.performance "
                        "WHERE model = %s AND computed_at >= %s ORDER BY score_date",
                        (stack.model, since),
                    )
                    performance = [dict(zip(PERFORMANCE_COLUMNS, r, strict=True)) for r in cur.fetchall()]
            if len(found) == len(days) and set(labelled) <= {r["score_date"] for r in performance}:
                break
            time.sleep(3)
    finally:
        conn.close()
    return {"drift": found, "performance": performance}
