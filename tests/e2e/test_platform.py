"""End to end: `scripts/stack.py run` (what `make run` calls) twice, on a real scheduler and API server.

The stack gets its own home, ports and databases, so it never touches a developer's `.local` stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from scripts.stack.postgres import ensure_databases
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e

ONCALL = "ml-oncall@example.com"
TOKEN_SECONDS = 60
# A YAML-only model whose SQL landing outlasts the Execution API token (pg_sleep), reads through a
# connection holding the secret canaries, and has a one-minute scoring deadline. It is never trained.
SLOW_SQL_SPEC = f"""
name: slow_sql
entity_key: customer_id
landing:
  conn_id: canary_src
  features_query: |
    SELECT v.customer_id, v.tenure_months FROM (SELECT pg_sleep({TOKEN_SECONDS + 20})) s,
      (VALUES (1, 5), (2, 7)) v(customer_id, tenure_months) WHERE %(date)s::date IS NOT NULL
  labels_query: SELECT 1 AS customer_id, 0 AS churned WHERE %(date)s::date IS NOT NULL
features:
  - {{name: tenure_months, type: int, min: 0, max: 120}}
target: {{name: churned, label_delay_days: 7}}
training: {{algorithm: logistic_regression, window_days: 10, holdout_days: 2, min_training_rows: 500}}
gate: {{floors: {{roc_auc: 0.6}}}}
monitoring: {{scores_due_minutes: 1}}
alerts: {{email_to: [{ONCALL}]}}
runs: {{retries: 0}}
"""


@pytest.fixture(scope="module")
def e2e_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTSHIFT_", "MLFLOW_"))}
    env.update(
        {
            "NIGHTSHIFT_HOME": str(ROOT / ".local-e2e"),
            "NIGHTSHIFT_DB_PREFIX": "nse2e",
            "NIGHTSHIFT_AIRFLOW_PORT": str(free_port()),
            "NIGHTSHIFT_MLFLOW_PORT": str(free_port()),
            # Shorter than the slow SQL landing below: a task must outlive its Execution API token.
            "NIGHTSHIFT_EXECUTION_TOKEN_SECONDS": str(TOKEN_SECONDS),
        }
    )
    for key in ("NIGHTSHIFT_DB_URL", "NIGHTSHIFT_PG_PORT"):
        if key in os.environ:
            env[key] = os.environ[key]
    stack = [sys.executable, "-m", "scripts.stack"]
    subprocess.run([*stack, "down"], env=env, cwd=ROOT, check=False, capture_output=True)

    shutil.rmtree(ROOT / ".local-e2e", ignore_errors=True)
    # The shipped spec, with quick retries and an on-call address, so that a failure alerts in seconds.
    models = ROOT / ".local-e2e" / "models"
    models.mkdir(parents=True)
    text = (ROOT / "include" / "models" / "churn.yaml").read_text().replace("email_to: []", f"email_to: [{ONCALL}]")
    (models / "churn.yaml").write_text(text + "\nruns: {retries: 1, retry_delay_seconds: 2}\n")
    # A second model on the same data whose promotions need a person's approval (YAML only, no code).
    approved = text.replace("name: churn", "name: churn_approved", 1).replace("approval: false", "approval: true")
    (models / "churn_approved.yaml").write_text(approved)
    # The multiclass and the regression examples as shipped (the latter lands CSV files).
    for example in ("next_offer", "customer_spend"):
        shutil.copy(ROOT / "include" / "models" / f"{example}.yaml", models / f"{example}.yaml")
    (models / "slow_sql.yaml").write_text(SLOW_SQL_SPEC)
    # A model whose challengers are judged on live days first (YAML only): two labelled days in shadow.
    live = text.replace("name: churn", "name: churn_live", 1).replace(
        "approval: false", "approval: false\n  mode: shadow\n  shadow_days: 2"
    )
    (models / "churn_live.yaml").write_text(live + "\nruns: {retries: 1, retry_delay_seconds: 2}\n")
    env["NIGHTSHIFT_MODELS_DIR"] = str(models)
    server = (
        os.environ.get("NIGHTSHIFT_DB_URL")
        or f"postgresql://postgres@127.0.0.1:{os.environ.get('NIGHTSHIFT_PG_PORT', '5432')}"
    )
    ensure_databases(server.rstrip("/"), ["nse2e_airflow", "nse2e_mlflow", "nse2e_warehouse"], reset=True)
    yield env
    subprocess.run([*stack, "down"], env=env, cwd=ROOT, check=False, capture_output=True)


def _stack(env, command: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.stack", command],
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
    assert len(days) == 4 and all(state == "success" for state, _ in days.values()), first.stdout[-3000:]
    assert {rows for _, rows in days.values()} == {"2,000"}
    assert "analyst query" in first.stdout
    # ...and the monitoring DAG, triggered by the scores Asset, for each published day: no drift in
    # the clean sample, and the realised performance of the day whose labels have landed.
    drift = [line for line in first.stdout.splitlines() if "drift in 0 of 8 features" in line]
    assert len(drift) == 4, first.stdout[-3000:]
    assert "report          file://" in first.stdout
    (realised,) = [line for line in first.stdout.splitlines() if "realised on" in line]
    assert float(realised.split("roc_auc ")[1].split()[0]) > 0.7, realised
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


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out.extend(int(c) for c in children)
    return out


def test_the_tasks_fork_from_workers_that_have_the_task_libraries_loaded(e2e_env):
    """The LocalExecutor's workers come from the scheduler's forkserver, which imported MLflow,
    Evidently, GX, scikit-learn and pyarrow once (plugins/nightshift_airflow/preload.py): a task forked
    from a worker has them without importing them. The workers ran make run's tasks above."""
    from scripts.stack.processes import service_pid
    from scripts.stack.settings import Stack

    scheduler = service_pid(Stack(home=ROOT / ".local-e2e"), "scheduler")
    assert scheduler, "the e2e scheduler is not running"
    servers = [
        c for c in _children(scheduler) if b"multiprocessing.forkserver" in Path(f"/proc/{c}/cmdline").read_bytes()
    ]
    assert len(servers) == 1, f"no forkserver under the scheduler (pid {scheduler})"
    assert b"nightshift_airflow.preload" in Path(f"/proc/{servers[0]}/cmdline").read_bytes()
    workers = _children(servers[0])
    assert workers, "the forkserver started no LocalExecutor worker"
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        # native parts of the libraries, mapped only once they are imported
        for library in ("pyarrow/libarrow", "sklearn/", "psycopg2/_psycopg", "scipy/"):
            assert library in maps, f"LocalExecutor worker {pid} has not loaded {library}"


def test_a_multiclass_and_a_regression_model_train_score_and_are_monitored_by_the_scheduler(e2e_env):
    """The shipped examples, YAML only, through the real scheduler: training with the gate, scoring of a
    labelled day (the regression lands its CSV first), and the monitoring runs their scores Assets start."""
    import time
    from datetime import UTC, datetime, timedelta

    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    api = api_for(Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"])))
    today = datetime.now(UTC).date()
    delays = {"next_offer": 14, "customer_spend": 30}
    for model in delays:
        api.wait_for_dag(f"{model}_training")
    training = {m: api.trigger(f"{m}_training") for m in delays}
    for m, run_id in training.items():
        assert api.wait_for_run(f"{m}_training", run_id, timeout=900)["state"] == "success", api.failed_task_errors(
            f"{m}_training", run_id
        )
    since = datetime.now(UTC)
    for m in delays:
        api.wait_for_dag(f"{m}_monitoring")
        api.unpause(f"{m}_monitoring")
    days = {m: [today - timedelta(days=d), today] for m, d in delays.items()}  # the labelled day, and today
    scoring = {(m, d): api.trigger(f"{m}_scoring", conf={"run_date": d.isoformat()}) for m in delays for d in days[m]}
    for (m, _), run_id in scoring.items():
        assert api.wait_for_run(f"{m}_scoring", run_id, timeout=900)["state"] == "success", api.failed_task_errors(
            f"{m}_scoring", run_id
        )
    spend_run = scoring[("customer_spend", today)]
    assert "land" in api.task_states("customer_spend_scoring", spend_run), "the CSV day is landed first"

    (offer,) = _warehouse_query(
        "SELECT count(*), count(DISTINCT predicted_class), min(score), "
        "max((SELECT count(*) FROM jsonb_object_keys(class_scores))) FROM nightshift.next_offer_scores "
        "WHERE score_date = %s",
        (today,),
    )
    assert offer[0] == 2000 and offer[1] >= 2 and 0 < offer[2] <= 1 and offer[3] == 4, offer
    (spend,) = _warehouse_query(
        "SELECT count(*), avg(prediction) FROM nightshift.customer_spend_scores WHERE score_date = %s", (today,)
    )
    assert spend[0] == 2000 and 50 < spend[1] < 150, spend
    # The Assets of the published days start the monitoring runs: drift of each day, and the realised
    # performance of the labelled day once today is monitored.
    # Both are waited for: a model's drift of today may be written after the other model's performance
    # (the monitoring runs of the four days run side by side).
    deadline, perf, drift = time.monotonic() + 600, [], []
    while time.monotonic() < deadline and (len(perf) < 2 or sum(d[1] for d in drift) < 4):
        perf = _warehouse_query(
            "SELECT model, target_type, f1_macro, rmse FROM monitoring.performance "
            "WHERE computed_at >= %s AND model = ANY(%s) ORDER BY model",
            (since, list(delays)),
        )
        drift = _warehouse_query(
            "SELECT model, count(*), max(features) FROM monitoring.drift_runs WHERE model = ANY(%s) "
            "GROUP BY model ORDER BY model",
            (list(delays),),
        )
        time.sleep(3)
    assert [p[:2] for p in perf] == [("customer_spend", "regression"), ("next_offer", "multiclass")], perf
    assert perf[0][3] > 0 and perf[0][2] is None and perf[1][2] > 0.5 and perf[1][3] is None, perf
    assert drift == [("customer_spend", 2, 7), ("next_offer", 2, 10)], drift


def test_a_shadow_challenger_is_promoted_after_its_live_days_by_the_scheduler(e2e_env):
    """``churn_live`` (promotion.mode shadow, shadow_days 2): the second training run's challenger enters
    shadow; each published day is scored again by it (``churn_live_shadow``, started by the scores
    Asset); the monitoring runs compare both on two labelled days and promote it with kind ``shadow``."""
    import time
    from datetime import UTC, datetime, timedelta

    import psycopg2.errors

    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    api = api_for(Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"])))
    model, today = "churn_live", datetime.now(UTC).date()
    api.wait_for_dag(f"{model}_training")
    conf = {"algorithm": "logistic_regression"}
    for expected_promote in ("success", "skipped"):  # first: no champion, promoted; then: enters shadow
        run_id = api.trigger(f"{model}_training", conf=conf)
        state = api.wait_for_run(f"{model}_training", run_id, timeout=900)["state"]
        assert state == "success", api.failed_task_errors(f"{model}_training", run_id)
        assert api.task_states(f"{model}_training", run_id)["promote"] == expected_promote
    (entered,) = _warehouse_query(
        "SELECT version, champion_version FROM monitoring.shadow_decisions WHERE model = %s AND action = 'entered'",
        (model,),
    )
    assert entered == (2, 1), entered
    for kind in ("shadow", "monitoring"):
        api.wait_for_dag(f"{model}_{kind}")
        api.unpause(f"{model}_{kind}")

    def score(days):
        runs = {d: api.trigger(f"{model}_scoring", conf={"run_date": d.isoformat()}) for d in days}
        for run_id in runs.values():
            state = api.wait_for_run(f"{model}_scoring", run_id, timeout=900)["state"]
            assert state == "success", api.failed_task_errors(f"{model}_scoring", run_id)

    def wait_for(query, args, done, timeout=600):
        deadline, rows = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            try:
                rows = _warehouse_query(query, args)
            except psycopg2.errors.UndefinedTable:  # the shadow run has not created its table yet
                rows = []
            if done(rows):
                return rows
            time.sleep(3)
        raise AssertionError(f"timed out: {query} gave {rows}")

    labelled = [today - timedelta(days=9), today - timedelta(days=8)]  # labels landed (delay 7)
    score(labelled)  # their Asset events start churn_live_shadow
    # (today's scheduled scoring run may publish, and be shadowed, too: only the labelled days count here)
    shadow = wait_for(
        f"SELECT score_date, model_version, count(*) FROM nightshift.{model}_shadow_scores "
        "WHERE score_date = ANY(%s) GROUP BY 1, 2 ORDER BY 1",
        (labelled,),
        lambda rows: len(rows) == 2,
    )
    assert shadow == [(d, 2, 2000) for d in labelled], shadow
    score([d + timedelta(days=7) for d in labelled])  # their monitoring runs measure the labelled days
    (move,) = wait_for(
        "SELECT from_version, to_version, reason FROM monitoring.promotions WHERE model = %s AND kind = 'shadow'",
        (model,),
        lambda rows: len(rows) == 1,
    )
    assert move[:2] == ("1", "2") and "shadow gate passed on 2 live days" in move[2], move
    perf = _warehouse_query(
        "SELECT score_date, role, model_version FROM monitoring.shadow_performance "
        "WHERE model = %s AND score_date = ANY(%s) ORDER BY 1, 2",
        (model, labelled),
    )
    assert perf == [(d, r, v) for d in labelled for r, v in (("challenger", 2), ("champion", 1))], perf
    latest = _warehouse_query(f"SELECT DISTINCT model_version FROM nightshift.{model}_latest_scores", ())
    assert latest == [(1,)], "shadow scores never reach the latest-scores view"


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


def test_a_scoring_backfill_is_idempotent_in_either_order(e2e_env):
    """Airflow's own backfill (REST API, as the UI's Backfill dialog does), backwards over two days that
    `make run` scored forwards, twice: each day still ends with exactly its rows."""
    import time
    from datetime import UTC, datetime, timedelta

    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    api = api_for(Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"])))
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (2, 1)]
    api.call(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": "churn_scoring",
            "from_date": f"{days[0]}T00:00:00+00:00",
            "to_date": f"{days[-1]}T23:59:00+00:00",
            "run_backwards": True,
            "reprocess_behavior": "completed",
            "max_active_runs": 2,
        },
    )
    deadline, runs = time.monotonic() + 600, []
    while time.monotonic() < deadline:
        runs = api.call("GET", "/api/v2/dags/churn_scoring/dagRuns?limit=100&run_type=backfill")["dag_runs"]
        if len(runs) == len(days) and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(2)
    assert sorted((r["logical_date"][:10], r["state"]) for r in runs) == [(d, "success") for d in days], runs

    rows = {day: n for day, n, _ in _warehouse_rows()}
    assert [rows.get(d) for d in days] == [2000, 2000], rows


def test_the_api_and_ui_need_a_login(e2e_env):
    base = f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_AIRFLOW_PORT']}"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{base}/api/v2/dags", timeout=10)
    assert anonymous.value.code in (401, 403)

    with pytest.raises(urllib.error.HTTPError) as wrong:
        _token(base, password="wrong")
    assert wrong.value.code == 401
    token = _token(base)

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


def _token(base: str, password: str | None = None) -> str:
    """A bearer token for ``admin`` (with the stack's password unless ``password`` is given)."""
    if password is None:
        password = json.loads((ROOT / ".local-e2e" / "secrets.json").read_text())["admin_password"]
    req = urllib.request.Request(
        f"{base}/auth/token",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": password}).encode(),
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["access_token"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def test_the_gx_validation_result_link_opens_the_suites_result(e2e_env):
    base = f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_AIRFLOW_PORT']}"
    auth = {"Authorization": f"Bearer {_token(base)}"}

    def get(url: str) -> bytes:
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=30) as r:
            return r.read()

    runs = json.loads(get(f"{base}/api/v2/dags/churn_scoring/dagRuns?state=success&order_by=-run_after"))
    run_id = runs["dag_runs"][0]["dag_run_id"]
    quoted = urllib.parse.quote(run_id, safe="")
    links = json.loads(get(f"{base}/api/v2/dags/churn_scoring/dagRuns/{quoted}/taskInstances/validate_output/links"))
    url = links["extra_links"]["GX validation result"]
    assert url.startswith(f"{base}/nightshift/validation?"), url
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # the result page needs a login too
        urllib.request.build_opener(_NoRedirect).open(url, timeout=10)
    assert anonymous.value.code == 303 and "/auth/login" in anonymous.value.headers["Location"]

    page = get(url).decode()
    assert "GX suite churn_scored_output" in page and 'data-field="verdict">passed<' in page
    assert 'data-field="rows">2000<' in page
    assert "expect_column_values_to_be_between(column=score" in page, page[:3000]
    assert 'data-field="result-uri">file://' in page and "/validation/churn_scoring/" in page


def test_the_result_page_refuses_a_summary_xcom_written_over_the_api(e2e_env):
    """XComs can be written over the REST API: a ``summary`` naming the stack's secrets file (or a forged
    result elsewhere) is refused by the page, and nothing of either file is shown."""
    from nightshift_airflow.links import URL_PREFIX
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    stack = Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"]))
    api = api_for(stack)
    secrets_file = ROOT / ".local-e2e" / "secrets.json"
    forged = ROOT / ".local-e2e" / "forged-result.json"  # a GX-shaped file the page would render if it read it
    canary = "expect_forged_canary_" + os.urandom(6).hex()
    forged.write_text(json.dumps({"success": True, "expectations": [{"expectation_type": canary, "success": True}]}))
    run_id = api.call("GET", "/api/v2/dags/churn_scoring/dagRuns?state=success&order_by=-run_after")["dag_runs"][0][
        "dag_run_id"
    ]
    quoted = urllib.parse.quote(run_id, safe="")
    entry = f"/api/v2/dags/churn_scoring/dagRuns/{quoted}/taskInstances/validate_input/xcomEntries/summary"
    query = urllib.parse.urlencode({"dag_id": "churn_scoring", "run_id": run_id, "task_id": "validate_input"})
    secrets = json.loads(secrets_file.read_text())
    for target in (secrets_file, forged):
        value = {"suite": "forged", "success": True, "rows": 1, "failures": [], "result_uri": target.as_uri()}
        api.call("PATCH", entry, {"value": value, "map_index": -1})  # accepted: any editor of runs may do it
        assert target.as_uri() in json.dumps(api.call("GET", entry))

        req = urllib.request.Request(
            f"{stack.airflow_url}{URL_PREFIX}/validation?{query}", headers={"Authorization": f"Bearer {api.token()}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            page = r.read().decode()
        assert 'data-field="problem">refused: the task&#39;s summary names its full result at' in page, page[:3000]
        assert canary not in page and 'data-field="verdict">failed<' in page
        assert not [k for k, v in secrets.items() if v and v in page], "a secret reached the page"


def test_the_nightshift_page_shows_each_model_behind_the_login(e2e_env, tmp_path):
    """In Debian's Chromium: the page asks for a login, then shows for each model the champion, the
    last gate decision, the last scored day and its rows and the drift trend of the real runs above."""
    from mlflow import MlflowClient
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_AIRFLOW_PORT']}"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{base}/nightshift/api/models", timeout=10)
    assert anonymous.value.code == 401

    client = MlflowClient(f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_MLFLOW_PORT']}")
    champion = client.get_model_version_by_alias("churn", "champion")
    newest = max(client.search_model_versions("name = 'churn'"), key=lambda v: int(v.version))
    scored_day, scored_rows, _ = _warehouse_rows()[-1]
    drift_day, drifted, features = _latest_drift("churn")

    # The same facts as JSON, for a bearer token.
    req = urllib.request.Request(f"{base}/nightshift/api/models", headers={"Authorization": f"Bearer {_token(base)}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        facts = {m["model"]: m for m in json.loads(r.read())["models"]}
    assert facts["churn"]["champion"]["version"] == str(champion.version)
    assert (facts["churn"]["scored"]["day"], facts["churn"]["scored"]["rows"]) == (scored_day, scored_rows)
    assert facts["churn_approved"]["champion"] is None  # not trained yet: its approval test comes below

    secrets = json.loads((ROOT / ".local-e2e" / "secrets.json").read_text())
    browser = _chromium(tmp_path)
    try:
        browser.get(f"{base}/plugin/nightshift")  # the page's place in the UI's navigation
        wait = WebDriverWait(browser, 60)
        user = wait.until(ec.visibility_of_element_located((By.NAME, "username")))
        assert "/auth/login" in browser.current_url, "an anonymous visitor must be sent to the login"
        user.send_keys("admin")
        browser.find_element(By.NAME, "password").send_keys(secrets["admin_password"])
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(ec.url_contains("/plugin/nightshift"))
        wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe")))
        card = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "section[data-model='churn']")))

        def field(name: str, within=card) -> str:
            return within.find_element(By.CSS_SELECTOR, f"[data-field='{name}']").text.strip()

        assert field("champion-version") == f"v{champion.version}"
        assert field("champion-since")[:4].isdigit()
        assert field("gate-version") == f"v{newest.version}"
        assert field("gate-verdict") == newest.tags["nightshift.gate"]
        assert field("gate-why") == newest.tags["nightshift.gate_summary"].strip()
        assert field("scored-date") == scored_day
        assert field("scored-rows") == f"{scored_rows:,}"
        assert field("drift-latest").startswith(f"{drift_day}: {drifted} of {features} features drifted")
        assert card.find_elements(By.CSS_SELECTOR, "svg.spark rect"), "the drift trend is drawn"
        links = {a.get_attribute("data-link"): a.get_attribute("href") for a in card.find_elements(By.TAG_NAME, "a")}
        assert links["dag-scoring"] == f"{base}/dags/churn_scoring"
        assert links["mlflow-champion"].endswith(f"/#/models/churn/versions/{champion.version}")
        assert f"/artifacts/monitoring/drift/{drift_day}/drift_report.html" in links["drift-report"]
        # The second model of the stack (YAML only) has its own card.
        assert browser.find_elements(By.CSS_SELECTOR, "section[data-model='churn_approved']")

        browser.switch_to.default_content()
        shot = ROOT / ".local-e2e" / "screenshots" / "nightshift-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot))
        png = shot.read_bytes()
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        # The window's width; its height less the headless browser's own bars.
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and width == 1400 and 600 < height <= 1000, (width, height)
    finally:
        browser.quit()


def _chromium(tmp_path):
    """Debian's headless Chromium through its ChromeDriver (``make browser`` installs both)."""

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "Debian's chromium and chromium-driver are missing: run `make browser`"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the suite may run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # no calls out of a closed network
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def _latest_drift(model: str) -> tuple[str, int, int]:
    (row,) = _warehouse_query(
        "SELECT score_date::text, drifted_features, features FROM monitoring.drift_runs "
        "WHERE model = %s ORDER BY score_date DESC LIMIT 1",
        (model,),
    )
    return row


FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@pytest.fixture
def fab_api_server(e2e_env):
    """A second API server on the stack's metadata DB, with the FAB auth manager: users ``viewer``
    (role Viewer) and ``reader`` (a role that may read the DAGs of ``churn`` only); yields its URL and
    their passwords.

    SimpleAuthManager (the stack's) cannot restrict a user per DAG. Switching the whole e2e stack to FAB
    would change the login every other test and the browser test use; a second server for this test
    only leaves them as they are (the FAB tables sit unused beside the simple auth manager).
    """
    import shlex
    import time

    env = dict(os.environ)
    for line in (ROOT / ".local-e2e" / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    port = free_port()
    env.update(
        {
            "AIRFLOW__CORE__AUTH_MANAGER": FAB,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    passwords = {"viewer": os.urandom(8).hex(), "reader": os.urandom(8).hex()}
    for args in (
        ["db", "migrate"],  # creates FAB's tables
        ["sync-perm", "--include-dags"],
        ["roles", "create", "ChurnReader"],
        [
            "roles",
            "add-perms",
            "ChurnReader",
            "-r",
            "DAG:churn_scoring",
            "DAG:churn_training",
            "XComs",
            "-a",
            "can_read",
        ],
        *(
            ["users", "create", "-u", u, "-p", pw, "-r", role, "-e", f"{u}@example.com", "-f", u, "-l", u]
            for (u, pw), role in zip(passwords.items(), ("Viewer", "ChurnReader"), strict=True)
        ),
    ):
        done = subprocess.run([airflow, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    log = (ROOT / ".local-e2e" / "logs" / "fab-api-server.log").open("w")
    server = subprocess.Popen([airflow, "api-server"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, "the FAB API server did not start"
                time.sleep(2)
        yield base, passwords
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_viewer_reads_but_cannot_trigger_and_the_page_shows_only_readable_models(fab_api_server):
    """Through a real API server with the FAB auth manager: the viewer reads DAGs but a trigger is
    refused (403); the Nightshift page lists for ``reader`` only the model whose DAGs it may read."""
    from scripts.stack.api import AirflowApi, ApiError

    base, passwords = fab_api_server
    viewer, reader = (AirflowApi(base, user, passwords[user]) for user in ("viewer", "reader"))

    assert "churn_scoring" in {d["dag_id"] for d in viewer.call("GET", "/api/v2/dags?limit=100")["dags"]}
    with pytest.raises(ApiError) as refused:
        viewer.call("POST", "/api/v2/dags/churn_scoring/dagRuns", {"logical_date": None})
    assert refused.value.status == 403

    readable = {d["dag_id"] for d in reader.call("GET", "/api/v2/dags?limit=100")["dags"]}
    assert readable == {"churn_scoring", "churn_training"}, readable
    seen_by_viewer = {m["model"] for m in viewer.call("GET", "/nightshift/api/models")["models"]}
    seen_by_reader = {m["model"] for m in reader.call("GET", "/nightshift/api/models")["models"]}
    assert {"churn", "churn_approved", "next_offer"} <= seen_by_viewer
    assert seen_by_reader == {"churn"}, seen_by_reader
    for dag_id, status in (("next_offer_scoring", 403), ("churn_scoring", 404)):  # nor another model's results
        with pytest.raises(ApiError) as hidden:
            reader.call("GET", f"/nightshift/validation?dag_id={dag_id}&run_id=none&task_id=validate_input")
        assert hidden.value.status == status, (dag_id, hidden.value)


def test_a_failed_run_reports_the_task_and_its_error(e2e_env):
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    stack = Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"]))
    api = api_for(stack)
    run_id = api.trigger("churn_training", conf={"force_promote": True})  # no reason given
    assert api.wait_for_run("churn_training", run_id, timeout=300)["state"] == "failed"

    errors = api.failed_task_errors("churn_training", run_id)

    assert list(errors) == ["resolve_run"]
    assert "'force_reason' is empty" in errors["resolve_run"]
    # The failed try's log ends with the one error that says what broke and what to do.
    (ti,) = [t for t in api.task_instances("churn_training", run_id) if t["task_id"] == "resolve_run"]
    logged = api.task_log("churn_training", run_id, "resolve_run", ti["try_number"])
    errors_logged = [e for e in logged if e.get("level") in ("error", "critical")]
    assert errors_logged and "'force_reason' is empty" in json.dumps(errors_logged[-1]), errors_logged[-3:]


def test_the_logs_of_a_successful_scoring_run_hold_no_error_and_no_warning_flood(e2e_env):
    """What on-call reads: the structured log of every task of a scoring run (each shard too) that
    succeeded has no line at level error and at most a handful of warnings (skops' shim warnings, GX's
    and MLflow's progress bars are silenced at their source)."""
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    api = api_for(Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"])))
    runs = api.call("GET", "/api/v2/dags/churn_scoring/dagRuns?state=success&order_by=-run_after")["dag_runs"]
    run_id = runs[0]["dag_run_id"]
    seen, noisy = set(), {}
    for ti in api.task_instances("churn_scoring", run_id):
        assert ti["state"] in ("success", "skipped"), ti
        if ti["state"] != "success":
            continue
        events = api.task_log("churn_scoring", run_id, ti["task_id"], ti["try_number"], ti["map_index"])
        assert events, f"no log for {ti['task_id']}"
        seen.add(ti["task_id"])
        levels = [str(e.get("level", "")).lower() for e in events]
        errors = [e for e, lv in zip(events, levels, strict=True) if lv in ("error", "critical")]
        warned = [e for e, lv in zip(events, levels, strict=True) if lv == "warning"]
        if errors or len(warned) > 5:
            noisy[(ti["task_id"], ti["map_index"])] = [str(e.get("event"))[:200] for e in (errors or warned)[:5]]
    assert {"resolve_run", "validate_input", "score", "validate_output", "publish"} <= seen, seen
    assert noisy == {}, noisy


@pytest.fixture(scope="module")
def inbox(e2e_env):
    """A real SMTP server on loopback, configured as the stack's ``nightshift_smtp`` connection."""
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack
    from tests.conftest import smtp_server

    stack = Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"]))
    extra = {"disable_ssl": True, "disable_tls": True, "from_email": "nightshift@example.com", "retry_limit": 1}
    with smtp_server() as (smtp, keep):
        api_for(stack).call(  # as an admin would, in Admin -> Connections
            "POST",
            "/api/v2/connections",
            {
                "connection_id": "nightshift_smtp",
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "extra": json.dumps(extra),
            },
        )
        yield keep


def test_a_final_failure_alerts_on_call_once_through_the_real_scheduler(e2e_env, inbox):
    """One mail per final failure (not per retry: apache/airflow#56942), and the DAG-level failure
    callback fires (apache/airflow#63374), on the pinned Airflow, with the real scheduler and DAG processor."""
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    api = api_for(Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"])))
    # A day that was never scored: resolve_run fails, is retried once (the e2e spec's runs.retries), fails.
    run_id = api.trigger("churn_monitoring", conf={"score_date": "2020-01-01"})
    assert api.wait_for_run("churn_monitoring", run_id, timeout=300)["state"] == "failed"
    (ti,) = [t for t in api.task_instances("churn_monitoring", run_id) if t["task_id"] == "resolve_run"]
    assert (ti["state"], ti["try_number"]) == ("failed", 2)

    # The DAG-level callback runs in the DAG processor, a little after the run failed.
    rows = _alerts_for(run_id, until=lambda rs: {r[0] for r in rs} == {"task_failure", "dag_failure"})

    kinds = [r[0] for r in rows]
    assert kinds.count("task_failure") == 1, rows  # the first try's failure did not alert
    task = next(r for r in rows if r[0] == "task_failure")
    assert task[1:4] == ("resolve_run", 2, 1)
    assert task[4].startswith("no published scores of churn for 2020-01-01")
    assert task[5] == ["log", "table", "mail"]
    assert "dag_failure" in kinds, f"the DAG-level failure callback did not fire: {rows}"
    run = next(r for r in rows if r[0] == "dag_failure")
    assert "reported by the alerts of resolve_run (try 2)" in run[4]
    assert run[5] == ["log", "table"], "the run's failure was already told by the task's alert"
    (mail,) = inbox.about(run_id)
    assert "churn_monitoring.resolve_run failed" in mail["Subject"]
    body = mail.get_body(("plain", "html")).get_content()
    assert "2 of 2" in body and run_id in body and "#monitoring-resolve_run" in body


def test_a_task_outlives_its_token_leaks_no_secret_and_the_deadline_fires_once(e2e_env, inbox):
    """One run of ``slow_sql_scoring`` (never trained) on the live scheduler:

    - its SQL landing sleeps longer than the Execution API token lives (``TOKEN_SECONDS``) and succeeds;
    - the password of the connection it reads through, and a token under an innocent extra key
      (``application_name``, sent to the server on every connect), appear nowhere in the run's task
      logs, rendered fields, XComs, REST API responses, alerts or mails;
    - the one-minute scoring deadline fires from the scheduler (the triggerer), once for the run.
    """
    import time

    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    api = api_for(Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"])))
    password, token = "pw-" + os.urandom(12).hex(), "tk-" + os.urandom(12).hex()
    api.call(
        "POST",
        "/api/v2/connections",
        {
            "connection_id": "canary_src",
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": int(os.environ.get("NIGHTSHIFT_PG_PORT", "5432")),
            "login": "postgres",
            "password": password,
            "schema": "nse2e_warehouse",
            "extra": json.dumps({"application_name": token}),
        },
    )
    dag = "slow_sql_scoring"
    api.wait_for_dag(dag)
    run_id = api.trigger(dag, conf={"run_date": "2020-03-02"})
    assert api.wait_for_run(dag, run_id, timeout=600)["state"] == "failed"  # no champion: resolve_run fails

    tis = {t["task_id"]: t for t in api.task_instances(dag, run_id)}
    assert tis["land"]["state"] == "success", api.failed_task_errors(dag, run_id)
    assert tis["land"]["duration"] > TOKEN_SECONDS + 10, tis["land"]
    assert tis["resolve_run"]["state"] == "failed"

    rows = _alerts_for(run_id, until=lambda rs: {"deadline_missed", "task_failure"} <= {r[0] for r in rs})
    time.sleep(5)  # a second firing would come within seconds
    rows = _alerts_for(run_id, until=lambda rs: True)
    assert [r[0] for r in rows].count("deadline_missed") == 1, rows
    assert [r[0] for r in rows].count("task_failure") == 1, rows

    quoted = urllib.parse.quote(run_id, safe="")
    seen = [json.dumps(api.call("GET", f"/api/v2/dags/{dag}/dagRuns/{quoted}")), json.dumps(rows)]
    for task_id, ti in tis.items():
        base = f"/api/v2/dags/{dag}/dagRuns/{quoted}/taskInstances/{task_id}"
        seen.append(json.dumps(api.call("GET", base)))  # rendered fields among them
        if not ti["try_number"]:  # never ran (upstream failed): no log, no XComs
            continue
        seen.append(json.dumps(api.task_log(dag, run_id, task_id, ti["try_number"])))
        for entry in api.call("GET", f"{base}/xcomEntries")["xcom_entries"]:
            seen.append(json.dumps(api.call("GET", f"{base}/xcomEntries/{entry['key']}")))
    seen.append(json.dumps(api.call("GET", f"/api/v2/eventLogs?dag_id={dag}&limit=100")))
    mails = inbox.about(run_id)
    assert mails, "the alerts were mailed"
    seen += [m.as_string() for m in mails]
    text = "\n".join(seen)
    assert "land" in text and run_id in text  # the texts searched are the right ones
    assert password not in text, "the connection password leaked"
    assert token not in text, "the token under an innocent key leaked"


def test_a_killed_task_still_reaches_on_call(e2e_env, inbox):
    """SIGKILL of a scoring shard's process on its last try: its own failure callback cannot run, so
    whatever Airflow really fires must tell on-call, once."""
    import signal
    import time
    from datetime import date
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.spec import load_spec
    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    stack = Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"]))
    api = api_for(stack)
    spec = load_spec(Path(e2e_env["NIGHTSHIFT_MODELS_DIR"]) / "churn.yaml")
    # A big day (2.5M rows, two shards): a clean sample day repeated under new keys.
    landing = ROOT / ".local-e2e" / "data" / "landing"  # the stack's own, not this process's (tests/conftest.py)
    sources = sorted(Path(landing, "churn", "features").glob("date=*/part-0.parquet"))
    assert sources, f"no sample days under {landing}"
    source = sources[-1]
    day = date(2020, 2, 1)
    target = Path(spec.landing.features(landing.as_uri(), day.isoformat()).removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    base = pq.read_table(source)
    keys = base.column(spec.entity_key).to_numpy()
    with pq.ParquetWriter(target, base.schema) as writer:
        for i in range(1250):
            copy = base.set_column(0, spec.entity_key, pa.array(keys + (i + 1) * 1_000_000))
            writer.write_table(copy, row_group_size=250_000)
    run_id = api.trigger("churn_scoring", conf={"run_date": day.isoformat()})

    killed, seen = [], set()
    deadline = time.monotonic() + 600
    while len(killed) < 2 and time.monotonic() < deadline:  # both tries of shard 0 (runs.retries is 1)
        for ti in api.task_instances("churn_scoring", run_id):
            seen.add((ti["task_id"], ti["map_index"], ti["try_number"], ti["state"], bool(ti.get("pid"))))
            if (ti["task_id"], ti["map_index"], ti["state"]) == ("score", 0, "running") and ti.get("pid"):
                if ti["try_number"] not in {k for k, _ in killed}:
                    os.kill(ti["pid"], signal.SIGKILL)
                    killed.append((ti["try_number"], ti["pid"]))
        if api.call("GET", f"/api/v2/dags/churn_scoring/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"] in (
            "failed",
            "success",
        ):
            break
        time.sleep(0.3)
    assert [k for k, _ in killed] == [1, 2], (
        killed,
        sorted(seen, key=str),
        api.failed_task_errors("churn_scoring", run_id),
    )
    assert api.wait_for_run("churn_scoring", run_id, timeout=300)["state"] == "failed"

    rows = _alerts_for(run_id, until=lambda rs: any(r[0] == "dag_failure" for r in rs))
    sent = [r for r in rows if "mail" in r[5]]
    assert len(sent) == 1, f"on-call must hear about the killed task exactly once: {rows}"
    assert len(inbox.about(run_id)) == 1
    if sent[0][0] == "dag_failure":  # no task callback ran for the killed process: the run's callback told
        assert "no task reported a failure (was a worker killed?)" in sent[0][4]


def test_a_promotion_waits_for_approval_and_records_the_approver(e2e_env):
    """promotion.approval: the run waits in the UI's Required actions; the admin approves over the
    REST API (as the UI does); @champion moves and monitoring.promotions names who asked and who approved."""
    import time

    from mlflow import MlflowClient

    from scripts.stack.api import api_for
    from scripts.stack.settings import Stack

    stack = Stack(home=ROOT / ".local-e2e", airflow_port=int(e2e_env["NIGHTSHIFT_AIRFLOW_PORT"]))
    api = api_for(stack)
    api.wait_for_dag("churn_approved_training")
    api.unpause("churn_approved_training")
    run_id = api.trigger("churn_approved_training")
    quoted = urllib.parse.quote(run_id, safe="")

    deadline, state = time.monotonic() + 600, None
    while time.monotonic() < deadline and state not in ("awaiting_input", "skipped", "failed"):
        state = api.task_states("churn_approved_training", run_id).get("approve_promotion")
        time.sleep(1)
    assert state == "awaiting_input", api.task_states("churn_approved_training", run_id)
    base = f"/api/v2/dags/churn_approved_training/dagRuns/{quoted}/taskInstances/approve_promotion/-1"
    assert api.call("GET", base)["state"] == "awaiting_input"
    client = MlflowClient(f"http://127.0.0.1:{e2e_env['NIGHTSHIFT_MLFLOW_PORT']}")
    assert not client.get_registered_model("churn_approved").aliases.get("champion"), "no move before approval"

    answer = api.call("PATCH", f"{base}/hitlDetails", {"chosen_options": ["Approve"]})
    assert answer["responded_by"]["name"] == "admin"
    assert api.wait_for_run("churn_approved_training", run_id, timeout=300)["state"] == "success"

    champion = client.get_model_version_by_alias("churn_approved", "champion")
    assert champion.tags["nightshift.approved_by"] == "admin"
    rows = _promotions("churn_approved")
    assert rows == [(None, champion.version, "gate", "admin", "admin", run_id)], rows


def _promotions(model: str) -> list:
    return _warehouse_query(
        "SELECT from_version, to_version, kind, requested_by, approved_by, run_id FROM monitoring.promotions "
        "WHERE model = %s ORDER BY id",
        (model,),
    )


def _warehouse_query(query: str, args: tuple) -> list:
    """Rows of ``query`` on the e2e stack's warehouse, as the superuser."""
    import psycopg2

    port = os.environ.get("NIGHTSHIFT_PG_PORT", "5432")
    conn = psycopg2.connect(host="127.0.0.1", port=port, dbname="nse2e_warehouse", user="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


def _alerts_for(run_id: str, until, timeout: float = 120) -> list:
    """The rows of monitoring.alerts for a run, once ``until(rows)`` holds (or the timeout passes)."""
    import time

    import psycopg2

    port = os.environ.get("NIGHTSHIFT_PG_PORT", "5432")
    conn = psycopg2.connect(host="127.0.0.1", port=port, dbname="nse2e_warehouse", user="postgres")
    conn.autocommit = True
    rows: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT kind, task_id, try_number, max_tries, error, channels FROM monitoring.alerts "
                    "WHERE run_id = %s ORDER BY id",
                    (run_id,),
                )
                rows = cur.fetchall()
            if until(rows):
                break
            time.sleep(2)
    finally:
        conn.close()
    return rows


def test_down_stops_everything(e2e_env):
    down = _stack(e2e_env, "down")
    assert down.returncode == 0, down.stderr
    status = _stack(e2e_env, "status")
    assert "running" not in status.stdout, status.stdout
    for port in (e2e_env["NIGHTSHIFT_AIRFLOW_PORT"], e2e_env["NIGHTSHIFT_MLFLOW_PORT"]):
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3)
