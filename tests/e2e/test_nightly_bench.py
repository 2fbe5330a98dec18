"""The nightly bench keeps working: ``python -m bench.nightly`` at a small size, on its own embedded
stack (the only one this module starts). No timings are asserted: the figures are the bench's output."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_nightly_bench_runs_end_to_end_at_a_small_size():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTSHIFT_", "MLFLOW_"))}
    env.update({"NIGHTSHIFT_BENCH_HOME": str(ROOT / ".local-bench-test"), "NIGHTSHIFT_BENCH_DB_PREFIX": "nsbenchtest"})
    for key in ("NIGHTSHIFT_DB_URL", "NIGHTSHIFT_PG_PORT"):
        if key in os.environ:
            env[key] = os.environ[key]
    cmd = [sys.executable, "-m", "bench.nightly", "--rows", "20000", "--train-rows", "50000"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]

    assert re.search(r"20,000 rows: trigger -> monitoring end [\d.]+ s \([\d,]+ rows/s\)", out), out
    assert re.search(r"ratio wall / predict-only [\d.]+; monitoring run success", out), out
    peak = re.search(r"max peak RSS of a task: (\d+) MB", out)
    assert peak and int(peak.group(1)) > 50, out  # every task logs its peak RSS and the bench read it
    for task in ("scoring.validate_input", "scoring.score", "scoring.publish", "monitoring.drift"):
        assert re.search(rf"^\s+{re.escape(task)}\s+\d+\s+[\d.]+\s+[\d.]+\s+\d+$", out, re.M), (task, out)
    assert re.search(r"training on [\d,]+ labelled rows .* peak RSS \d+ MB, \d+ MB per million rows", out), out
