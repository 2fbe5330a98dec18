"""Scale-out: the embedded stack on CeleryExecutor (Redis broker, Postgres result backend) with two
named workers, a real scheduler and API server. A day big enough for four shards is scored; the
shards ran on both workers and the day is in Postgres exactly once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date, timedelta

import pytest

from scripts.stack import ensure_databases
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e

HOME = ROOT / ".local-celery"
REDIS_URL = "redis://127.0.0.1:6379/7"  # its own database number: no other stack's tasks
TODAY = date(2026, 11, 20)
BIG_DAY = date(2026, 12, 1)  # 40,000 rows: four shards of 10,000


@pytest.fixture(scope="module")
def celery_stack():
    import shutil

    import redis
    import yaml

    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_spec
    from scripts import stack as st

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTSHIFT_", "MLFLOW_"))}
    env.update(
        {
            "NIGHTSHIFT_HOME": str(HOME),
            "NIGHTSHIFT_DB_PREFIX": "nscel",
            "NIGHTSHIFT_AIRFLOW_PORT": str(free_port()),
            "NIGHTSHIFT_MLFLOW_PORT": str(free_port()),
            "NIGHTSHIFT_EXECUTOR": "CeleryExecutor",
            "NIGHTSHIFT_CELERY_WORKERS": "2",
            "NIGHTSHIFT_CELERY_CONCURRENCY": "1",  # a busy worker takes no second task: both must work
            "NIGHTSHIFT_REDIS_URL": REDIS_URL,
        }
    )
    for key in ("NIGHTSHIFT_DB_URL", "NIGHTSHIFT_PG_PORT"):
        if key in os.environ:
            env[key] = os.environ[key]
    cli = [sys.executable, str(ROOT / "scripts" / "stack.py")]
    subprocess.run([*cli, "down"], env=env, cwd=ROOT, check=False, capture_output=True)
    shutil.rmtree(HOME, ignore_errors=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    models = HOME / "models"
    models.mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "include" / "models" / "churn.yaml").read_text())
    raw["scoring"] = {**raw.get("scoring", {}), "shard_rows": 10_000}
    (models / "churn.yaml").write_text(yaml.safe_dump(raw))
    env["NIGHTSHIFT_MODELS_DIR"] = str(models)
    server = (
        os.environ.get("NIGHTSHIFT_DB_URL")
        or f"postgresql://postgres@127.0.0.1:{os.environ.get('NIGHTSHIFT_PG_PORT', '5432')}"
    )
    ensure_databases(server.rstrip("/"), ["nscel_airflow", "nscel_mlflow", "nscel_warehouse"], reset=True)

    spec = load_spec(models / "churn.yaml")
    landing = (HOME / "data" / "landing").as_uri()
    generate(spec, landing, SampleOptions(start=TODAY - timedelta(days=41), end=TODAY))
    generate(spec, landing, SampleOptions(start=BIG_DAY, end=BIG_DAY, rows_per_day=40_000))

    up = subprocess.run([*cli, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    stack = st.Stack(home=HOME, airflow_port=int(env["NIGHTSHIFT_AIRFLOW_PORT"]))
    yield stack, st.api_for(stack), server.rstrip("/")
    subprocess.run([*cli, "down"], env=env, cwd=ROOT, check=False, capture_output=True)


def _executed_on(worker_log: str, run_id: str) -> set[tuple[str, int]]:
    """(task_id, map_index) of the workloads of ``run_id`` a worker's log says it executed."""
    found = set()
    for line in worker_log.splitlines():
        if "Executing workload in Celery" in line and f"run_id='{run_id}'" in line:
            task = re.search(r"task_id='([^']+)'", line)
            index = re.search(r"map_index=(-?\d+)", line)
            if task and index:
                found.add((task.group(1), int(index.group(1))))
    return found


def test_a_sharded_day_is_scored_by_two_celery_workers(celery_stack):
    import psycopg2

    stack, api, server = celery_stack
    for dag_id in ("churn_training", "churn_scoring"):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)
    training = api.trigger("churn_training", conf={"window_end": (TODAY - timedelta(days=7)).isoformat()})
    assert api.wait_for_run("churn_training", training, timeout=600)["state"] == "success"

    run_id = api.trigger("churn_scoring", conf={"run_date": BIG_DAY.isoformat()})
    assert api.wait_for_run("churn_scoring", run_id, timeout=600)["state"] == "success", api.failed_task_errors(
        "churn_scoring", run_id
    )

    on = {name: _executed_on((stack.log_dir / f"{name}.log").read_text(), run_id) for name in stack.worker_names}
    assert sorted(on) == ["celery-worker-1", "celery-worker-2"]
    shards = {(t, i) for ran in on.values() for t, i in ran if t == "score"}
    assert shards == {("score", i) for i in range(4)}, on
    assert all(any(t == "score" for t, _ in ran) for ran in on.values()), f"shards did not spread: {on}"
    assert not (on["celery-worker-1"] & on["celery-worker-2"]), "no task ran twice"

    conn = psycopg2.connect(f"{server}/nscel_warehouse")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), count(DISTINCT customer_id), min(model_version) FROM nightshift.churn_scores "
                "WHERE score_date = %s",
                (BIG_DAY,),
            )
            assert cur.fetchone() == (40_000, 40_000, 1)
    finally:
        conn.close()
