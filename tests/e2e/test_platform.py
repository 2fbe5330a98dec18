"""End to end: `scripts/stack.py run` (what `make run` calls) twice, on a real scheduler and API server.

The stack gets its own home, ports and databases, so it never touches a developer's `.local` stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from scripts.stack import ensure_databases
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTSHIFT_", "MLFLOW_"))}
    env.update(
        {
            "NIGHTSHIFT_HOME": str(ROOT / ".local-e2e"),
            "NIGHTSHIFT_DB_PREFIX": "nse2e",
            "NIGHTSHIFT_AIRFLOW_PORT": str(free_port()),
            "NIGHTSHIFT_MLFLOW_PORT": str(free_port()),
        }
    )
    for key in ("NIGHTSHIFT_DB_URL", "NIGHTSHIFT_PG_PORT"):
        if key in os.environ:
            env[key] = os.environ[key]
    stack = [sys.executable, str(ROOT / "scripts" / "stack.py")]
    subprocess.run([*stack, "down"], env=env, cwd=ROOT, check=False, capture_output=True)
    import shutil

    shutil.rmtree(ROOT / ".local-e2e", ignore_errors=True)
    server = (
        os.environ.get("NIGHTSHIFT_DB_URL")
        or f"postgresql://postgres@127.0.0.1:{os.environ.get('NIGHTSHIFT_PG_PORT', '5432')}"
    )
    ensure_databases(server.rstrip("/"), ["nse2e_airflow", "nse2e_mlflow", "nse2e_warehouse"], reset=True)
    yield env
    subprocess.run([*stack, "down"], env=env, cwd=ROOT, check=False, capture_output=True)


def _stack(env, command: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _summary_line(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(label))


def test_make_run_twice_trains_promotes_then_gates_against_the_champion(e2e_env):
    first = _stack(e2e_env, "run")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "triggered churn_training run" in first.stderr  # over the REST API
    assert _summary_line(first.stdout, "state").split()[-1] == "success"
    assert _summary_line(first.stdout, "@champion").split()[-1] == "v1"
    assert "no champion yet" in _summary_line(first.stdout, "gate")

    # ...then the scoring DAG, on the same scheduler, for the last three sample days.
    days = _scored_days(first.stdout)
    assert len(days) == 3 and all(state == "success" for state, _ in days.values()), first.stdout[-3000:]
    assert {rows for _, rows in days.values()} == {"2,000"}
    assert "analyst query" in first.stdout
    first_scores = _warehouse_rows()
    assert {day: n for day, n, _ in first_scores} == {day: 2000 for day in days}
    assert {v for _, _, v in first_scores} == {1}, "scored with the champion, version 1"

    second = _stack(e2e_env, "run")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "already running" in second.stderr
    assert "churn v2" in _summary_line(second.stdout, "model version")
    gate = _summary_line(second.stdout, "gate")
    assert "vs champion" in gate
    champion = _summary_line(second.stdout, "@champion").split()[-1]
    assert champion == ("v2" if "gate passed" in gate else "v1")
    # Re-scoring the same days replaced them: still one copy of each day, by the current champion.
    second_scores = _warehouse_rows()
    assert {day: n for day, n, _ in second_scores} == {day: 2000 for day in days}
    assert {v for _, _, v in second_scores} == {int(champion.removeprefix("v"))}


def _scored_days(out: str) -> dict[str, tuple[str, str]]:
    """{day: (state, rows)} from the scoring summary lines ``YYYY-MM-DD  state  N rows in ...``."""
    import re

    found = re.findall(r"^\s+(\d{4}-\d{2}-\d{2})\s+(\w+)\s+([\d,]+) rows in nightshift\.churn_scores", out, re.M)
    return {day: (state, rows) for day, state, rows in found}


def _warehouse_rows() -> list[tuple[str, int, int]]:
    """(day, rows, model version) per scored day, read as the analyst login the stack created."""
    import psycopg2

    secrets = json.loads((ROOT / ".local-e2e" / "secrets.json").read_text())
    port = os.environ.get("NIGHTSHIFT_PG_PORT", "5432")
    conn = psycopg2.connect(
        host="127.0.0.1", port=port, dbname="nse2e_warehouse", user="analyst", password=secrets["analyst_password"]
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT score_date::text, count(*), max(model_version) FROM nightshift.churn_scores "
                "GROUP BY 1 ORDER BY 1"
            )
            return cur.fetchall()
    finally:
        conn.close()


def test_the_api_and_ui_need_a_login(e2e_env):
    base = f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_AIRFLOW_PORT']}"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{base}/api/v2/dags", timeout=10)
    assert anonymous.value.code in (401, 403)

    bad = urllib.request.Request(
        f"{base}/auth/token",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": "wrong"}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(bad, timeout=10)
    assert wrong.value.code == 401

    secrets = json.loads((ROOT / ".local-e2e" / "secrets.json").read_text())
    good = urllib.request.Request(
        f"{base}/auth/token",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": secrets["admin_password"]}).encode(),
    )
    with urllib.request.urlopen(good, timeout=10) as r:
        token = json.loads(r.read())["access_token"]

    def get(path: str):
        req = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    assert "churn_training" in {d["dag_id"] for d in get("/api/v2/dags")["dags"]}

    # The task's extra links in the UI open the MLflow run and the registered version.
    runs = get("/api/v2/dags/churn_training/dagRuns?state=success&order_by=-run_after")["dag_runs"]
    run_id = urllib.parse.quote(runs[0]["dag_run_id"], safe="")
    train_links = get(f"/api/v2/dags/churn_training/dagRuns/{run_id}/taskInstances/train/links")["extra_links"]
    mlflow = f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_MLFLOW_PORT']}"
    assert train_links["MLflow run"].startswith(f"{mlflow}/#/experiments/")
    register_links = get(f"/api/v2/dags/churn_training/dagRuns/{run_id}/taskInstances/register/links")["extra_links"]
    assert register_links["MLflow model version"].startswith(f"{mlflow}/#/models/churn/versions/")
    for private in ("secrets.json", "env.sh", "airflow/passwords.json"):
        assert (ROOT / ".local-e2e" / private).stat().st_mode & 0o077 == 0, f"{private} must be private"


def test_a_failed_run_reports_the_task_and_its_error(e2e_env):
    from scripts import stack as st

    stack = st.Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"]))
    api = st.api_for(stack)
    run_id = api.trigger("churn_training", conf={"force_promote": True})  # no reason given
    assert api.wait_for_run("churn_training", run_id, timeout=300)["state"] == "failed"

    errors = api.failed_task_errors("churn_training", run_id)

    assert list(errors) == ["resolve_run"]
    assert "'force_reason' is empty" in errors["resolve_run"]


def test_down_stops_everything(e2e_env):
    down = _stack(e2e_env, "down")
    assert down.returncode == 0, down.stderr
    status = _stack(e2e_env, "status")
    assert "running" not in status.stdout, status.stdout
    for port in (e2e_env["NIGHTSHIFT_AIRFLOW_PORT"], e2e_env["NIGHTSHIFT_MLFLOW_PORT"]):
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3)
