"""The scoring benchmark runs and reports every method and the ratios (small sizes; no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_scoring_bench_prints_each_method_and_the_ratios(platform):
    env = {**os.environ, "NIGHTSHIFT_DB_PREFIX": platform.db_prefix, "NIGHTSHIFT_HOME": str(platform.home)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.scoring", "--rows", "30000", "--rss-rows", "60000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for method in ("ours", "to_sql", "predict_only", "raw_copy", "ours (big)"):
        assert any(line.startswith(method) for line in lines), out.stdout
    assert "the throughput of to_sql" in out.stdout
    assert "of predict-only throughput" in out.stdout
    assert "peak RSS 30,000 -> 60,000 rows" in out.stdout
    # Ours scored every valid row: the same count as the to_sql baseline, which drops the same bad rows.
    counts = {line.split()[0]: line.split()[1] for line in lines if line.startswith(("ours  ", "to_sql"))}
    assert counts["ours"] == counts["to_sql"]
    # Beside the binary model, a multiclass and a regression model at the same ratios.
    by_type = {
        line.split()[0]: line.split()
        for line in lines[lines.index(next(x for x in lines if x.startswith("by problem type"))) :]
    }
    for model, kind in (("churn", "binary"), ("next_offer", "multiclass"), ("customer_spend", "regression")):
        assert by_type[model][1] == kind, out.stdout
        assert by_type[model][4].endswith("x") and by_type[model][5].endswith("%"), by_type[model]


def test_drift_bench_prints_both_times_and_the_agreement():
    out = subprocess.run(
        [sys.executable, "-m", "bench.drift", "--rows", "40000", "--sample-rows", "10000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "drift step on 40,000 current rows" in out.stdout
    assert any(line.startswith("ours ") and "seeded sample of" in line for line in out.stdout.splitlines())
    assert any(line.startswith("evidently_all ") for line in out.stdout.splitlines())
    assert "of the time of Evidently on all rows" in out.stdout
    # The generator drifts charges, contracts and support calls only: both runs say so.
    assert "verdicts agree on 8 of 8 features" in out.stdout
    assert "drifted: 4 (sample) / 4 (all rows)" in out.stdout
