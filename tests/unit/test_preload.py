"""The task libraries each executor worker imports once (plugins/nightshift_airflow/preload.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _in_fresh_interpreter(code: str) -> dict:
    env_path = f"{ROOT}:{ROOT / 'plugins'}"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "GX_ANALYTICS_ENABLED": "False"},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_listed_library_imports_and_no_nightshift_code_is_preloaded():
    # Python's forkserver skips a preload module that fails to import without a word: a misspelt name
    # would silently cost every task its seconds again. And a worker keeps what it imported until it
    # restarts, so Nightshift's own code must not be among it (a changed operator takes effect at once).
    got = _in_fresh_interpreter(
        "import json, sys; import airflow, nightshift_airflow.preload as p; "
        "ours = sorted(m for m in sys.modules if m.startswith(('include', 'nightshift_airflow')) "
        "and m not in ('nightshift_airflow', 'nightshift_airflow.preload')); "
        "print(json.dumps({'failed': p.preload(), 'ours': ours, "
        "'loaded': [m for m in p.TASK_LIBRARIES if m in sys.modules]}))"
    )
    from nightshift_airflow.preload import TASK_LIBRARIES

    assert got["failed"] == []
    assert got["loaded"] == list(TASK_LIBRARIES)
    assert got["ours"] == []
    assert {"mlflow", "evidently", "great_expectations", "sklearn.ensemble"} <= set(TASK_LIBRARIES)


def test_a_library_that_fails_to_import_is_named_in_a_warning_and_the_others_still_load(caplog):
    from nightshift_airflow.preload import preload

    with caplog.at_level(logging.WARNING, logger="nightshift_airflow.preload"):
        failed = preload(("json", "no_such_library_xyz", "csv"))
    assert failed == ["no_such_library_xyz"]
    assert "could not import no_such_library_xyz (ModuleNotFoundError" in caplog.text
    assert "csv" in sys.modules


def test_the_celery_config_is_airflows_own_plus_the_preload():
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from nightshift_airflow.celery_config import CELERY_CONFIG

    assert CELERY_CONFIG.pop("imports") == ("nightshift_airflow.preload",)
    assert CELERY_CONFIG == DEFAULT_CELERY_CONFIG


def test_each_executor_of_the_stack_gets_its_preload_settings(tmp_path):
    from scripts.stack.services import airflow_env
    from scripts.stack.settings import PRELOAD_ENV, Stack

    local = airflow_env(Stack(home=tmp_path, executor="LocalExecutor"), "postgresql://u@127.0.0.1:5432/x", {})
    assert local["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert local["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",") == ["airflow", "nightshift_airflow.preload"]
    celery = airflow_env(Stack(home=tmp_path, executor="CeleryExecutor"), "postgresql://u@127.0.0.1:5432/x", {})
    # with Celery the scheduler runs no task: no forkserver full of libraries beside it
    assert "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD" not in celery
    assert set(PRELOAD_ENV) == {"LocalExecutor", "CeleryExecutor"}
