"""Scale-out as in production: the embedded stack on CeleryExecutor (Redis broker, Postgres result
backend) with two named workers, a real scheduler and API server, and every file on S3 (moto's S3 in
server mode on loopback): landing data, work files, MLflow artifacts and drift reports.

Land on S3 -> train -> score a day big enough for four shards -> drift report on S3. The shards ran
on both workers and the day is in Postgres exactly once. A second model, ``tuned`` (churn with a
``training.search``), runs its trials as mapped tasks on both workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, timedelta

import pytest

from scripts.stack.postgres import ensure_databases
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e

HOME = ROOT / ".local-celery"
REDIS_URL = "redis://127.0.0.1:6379/7"  # its own database number: no other stack's tasks
BUCKET = "nightshift-lake"
TODAY = date(2026, 11, 20)
BIG_DAY = date(2026, 12, 1)  # 40,000 rows: four shards of 10,000
TUNED_SEARCH = {
    "n_trials": 4,
    "seed": 3,
    "space": {"max_iter": {"choices": [10, 20]}, "max_depth": {"low": 2, "high": 6, "type": "int"}},
}


@pytest.fixture(scope="module")
def celery_stack():
    from tests.conftest import s3_server

    with s3_server(BUCKET) as endpoint:
        yield from _stack(endpoint)


def _stack(endpoint: str):
    import shutil

    import redis
    import yaml

    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_spec
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    aws = {
        "AWS_ENDPOINT_URL": endpoint,  # boto3, the MLflow server and our Storage read it
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTSHIFT_", "MLFLOW_"))}
    env.update(aws)
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
            "NIGHTSHIFT_LANDING_ROOT": f"s3://{BUCKET}/landing",
            "NIGHTSHIFT_WORK_ROOT": f"s3://{BUCKET}/work",
            "NIGHTSHIFT_REPORTS_ROOT": f"s3://{BUCKET}/reports",
            "NIGHTSHIFT_ARTIFACTS_URI": f"s3://{BUCKET}/mlflow",
            # The tasks' S3 credentials, as an admin would set the connection (Amazon provider's format).
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
        }
    )
    for key in ("NIGHTSHIFT_DB_URL", "NIGHTSHIFT_PG_PORT"):
        if key in os.environ:
            env[key] = os.environ[key]
    cli = [sys.executable, "-m", "scripts.stack"]
    subprocess.run([*cli, "down"], env=env, cwd=ROOT, check=False, capture_output=True)
    shutil.rmtree(HOME, ignore_errors=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    models = HOME / "models"
    models.mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "include" / "models" / "churn.yaml").read_text())
    raw["scoring"] = {**raw.get("scoring", {}), "shard_rows": 10_000}
    (models / "churn.yaml").write_text(yaml.safe_dump(raw))
    # The same data (its landing URIs name churn), with a search of four small trials.
    tuned = {**raw, "name": "tuned", "training": {**raw["training"], "search": TUNED_SEARCH}}
    (models / "tuned.yaml").write_text(yaml.safe_dump(tuned))
    env["NIGHTSHIFT_MODELS_DIR"] = str(models)
    server = (
        os.environ.get("NIGHTSHIFT_DB_URL")
        or f"postgresql://postgres@127.0.0.1:{os.environ.get('NIGHTSHIFT_PG_PORT', '5432')}"
    )
    ensure_databases(server.rstrip("/"), ["nscel_airflow", "nscel_mlflow", "nscel_warehouse"], reset=True)

    spec = load_spec(models / "churn.yaml")
    landing = env["NIGHTSHIFT_LANDING_ROOT"]
    before = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)  # this process lands the data on S3 too
    try:
        generate(spec, landing, SampleOptions(start=TODAY - timedelta(days=41), end=TODAY))
        generate(spec, landing, SampleOptions(start=BIG_DAY, end=BIG_DAY, rows_per_day=40_000))
        _split_row_groups(spec.landing.features(landing, BIG_DAY.isoformat()), 10_000)  # shards are row groups
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    up = subprocess.run([*cli, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    stack = Stack(
        home=HOME, airflow_port=int(env["NIGHTSHIFT_AIRFLOW_PORT"]), executor="CeleryExecutor", celery_workers=2
    )
    yield stack, api_for(stack), server.rstrip("/"), endpoint
    subprocess.run([*cli, "down"], env=env, cwd=ROOT, check=False, capture_output=True)


def _split_row_groups(uri: str, rows: int) -> None:
    import pyarrow.parquet as pq

    from include.nightshift.storage import Storage

    fs, path = Storage().resolve(uri)
    table = pq.read_table(path, filesystem=fs)
    pq.write_table(table, path, filesystem=fs, row_group_size=rows)
    assert pq.ParquetFile(path, filesystem=fs).metadata.num_row_groups == len(table) // rows


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


def test_land_train_score_and_report_on_s3_with_shards_on_two_celery_workers(celery_stack):
    import boto3
    import psycopg2

    stack, api, server, endpoint = celery_stack
    for dag_id in ("churn_training", "churn_scoring", "churn_monitoring"):
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
    # The shards and the input suite beside them are queued together; with one slot per worker, both
    # workers take a share. (Which worker gets which shard is a race: a 10,000-row shard takes a second
    # or two once the libraries come preloaded, so the worker running the suite may find every shard taken.)
    side_by_side = ("score", "validate_input")
    assert all(any(t in side_by_side for t, _ in ran) for ran in on.values()), f"the day's work did not spread: {on}"
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
            report = _drift_report(cur, BIG_DAY)
    finally:
        conn.close()

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    assert report.startswith(f"s3://{BUCKET}/reports/churn/drift/date={BIG_DAY}/"), report
    html = s3.get_object(Bucket=BUCKET, Key=report.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert html.lstrip().lower().startswith(b"<!doctype html") and b"monthly_charges" in html
    models = s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")
    assert any(o["Key"].endswith("MLmodel") for o in models.get("Contents", [])), "the model's artifacts are on S3"
    work = s3.list_objects_v2(Bucket=BUCKET, Prefix="work/")
    assert work.get("KeyCount", 0) > 0, "the runs' work files are on S3"


def _drift_report(cur, day: date, timeout: float = 300) -> str:
    """The drift report URI of ``day`` once the monitoring run the scores Asset triggered wrote it."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur.execute("SELECT to_regclass('monitoring.drift_runs') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute(
                "SELECT report_uri FROM monitoring.drift_runs WHERE model = 'churn' AND score_date = %s", (day,)
            )
            row = cur.fetchone()
            if row:
                return row[0]
        cur.connection.commit()
        time.sleep(2)
    raise AssertionError(f"no drift result for {day} after {timeout:.0f} s")


def _wait_until_no_run_is_active(api, timeout: float = 300) -> None:
    """Until no DAG run is queued or running (the test before leaves a monitoring run behind it)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        active = api.call("GET", "/api/v2/dags/~/dagRuns?state=queued&state=running")["dag_runs"]
        if not active:
            return
        assert time.monotonic() < deadline, f"runs still active after {timeout:.0f} s: {active}"
        time.sleep(1)


def test_search_trials_run_on_both_celery_workers(celery_stack):
    stack, api, _, _ = celery_stack
    api.wait_for_dag("tuned_training")
    # Both workers free when the trials are queued: each worker has one slot, so the trials must spread.
    _wait_until_no_run_is_active(api)
    api.unpause("tuned_training")
    run_id = api.trigger("tuned_training", conf={"window_end": (TODAY - timedelta(days=7)).isoformat()})
    assert api.wait_for_run("tuned_training", run_id, timeout=600)["state"] == "success", api.failed_task_errors(
        "tuned_training", run_id
    )

    on = {name: _executed_on((stack.log_dir / f"{name}.log").read_text(), run_id) for name in stack.worker_names}
    trials = {(t, i) for ran in on.values() for t, i in ran if t == "trial"}
    assert trials == {("trial", i) for i in range(4)}, on
    assert all(any(t == "trial" for t, _ in ran) for ran in on.values()), f"trials did not spread: {on}"

    # The train task read every mapped trial's result: its log (as on-call reads it) holds no error line.
    logs = [p for p in stack.home.rglob("task_id=train/*.log") if "dag_id=tuned_training" in str(p)]
    assert logs, "the train task's log"
    for path in logs:
        errors = [line for line in path.read_text().splitlines() if re.search(r'"level":\s*"(error|critical)"', line)]
        assert not errors, errors
        assert "best of 4 trials" in path.read_text()
