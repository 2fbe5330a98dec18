"""The Nightshift page's HTML and the GX result page, rendered from overviews and results built here.

What the page reads from MLflow and Postgres is tested in tests/integration/test_monitoring_dag.py,
and the page behind the login in headless Chromium in tests/e2e/test_platform.py.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from include.nightshift.overview import Champion, DriftPoint, GateDecision, ModelOverview, ScoredDay
from nightshift_airflow import ui

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def render(models, problems=()):
    return ui.render_overview(models, "http://mlflow:5000", "http://airflow:8080", list(problems), NOW, "admin")


def render_validation(summary, rows, problem=None):
    task_url = "http://airflow/dags/churn_training/runs/manual__1/tasks/validate_raw_features"
    return ui.render_validation(
        "churn_training", "manual__1", "validate_raw_features", summary, rows, problem, task_url
    )


def full_model() -> ModelOverview:
    return ModelOverview(
        model="churn",
        owner="ml-team",
        description="Churn <script>alert(1)</script> in 30 days",
        champion=Champion("3", NOW, "rollback", "alice", "bob", "v4 over-predicts", "run3"),
        gate=GateDecision("4", "rejected", "roc_auc 0.71 < champion 0.74 - 0.005", NOW, "3"),
        scored=ScoredDay(date(2026, 11, 23), 1_234_567, 3, NOW),
        drift=[
            DriftPoint(date(2026, 11, 22), 0.0, 0, 8, 0.5, False, "run3"),
            DriftPoint(date(2026, 11, 23), 0.625, 5, 8, 0.5, True, "run3"),
        ],
        experiment_ids={"run3": "7"},
    )


def test_the_page_shows_each_part_of_a_model():
    html = render([full_model()])

    assert 'data-field="champion-version">v3<' in html
    assert 'data-field="champion-since">2026-11-24 06:00 UTC<' in html
    assert 'data-field="champion-kind">rollback<' in html and "approved by" in html
    assert 'class="rejected" data-field="gate-verdict">rejected<' in html
    assert "roc_auc 0.71 &lt; champion 0.74" in html
    assert 'data-field="scored-rows">1,234,567<' in html and 'data-field="scored-date">2026-11-23<' in html
    assert "2026-11-23: 5 of 8 features drifted (62%; retrain above 50%)" in html
    assert (
        'href="http://mlflow:5000/#/experiments/7/runs/run3/artifacts/monitoring/drift/2026-11-23/drift_report.html"'
        in (html)
    )
    assert 'href="http://mlflow:5000/#/models/churn/versions/3"' in html
    for kind in ("training", "scoring", "monitoring", "rollback"):
        assert f'href="http://airflow:8080/dags/churn_{kind}" target="_top"' in html


def test_text_from_specs_and_tags_is_escaped():
    html = render([full_model()])

    assert "<script>" not in html
    assert "Churn &lt;script&gt;alert(1)&lt;/script&gt; in 30 days" in html


def test_a_model_with_nothing_yet_and_the_problems_are_shown():
    empty = ModelOverview("fresh", "ml-team", "", problems=["warehouse: OperationalError: refused"])

    html = render([empty], problems=["models/bad.yaml: training.window_days: must be > 0"])

    assert 'data-field="champion-version">none<' in html and "trigger fresh_training" in html
    assert 'data-field="gate-verdict">none<' in html and 'data-field="scored-date">none<' in html
    assert "no drift results yet" in html and "<svg" not in html
    assert "warehouse: OperationalError: refused" in html and "training.window_days" in html


def test_the_drift_sparkline_has_a_bar_per_day_red_above_the_threshold():
    svg = ui.sparkline([0.0, 0.25, 0.75], threshold=0.5)

    assert svg.count("<rect ") == 3
    assert svg.count('fill="#c0392b"') == 1  # only the day above the threshold
    assert "<line " in svg and "<title>75%</title>" in svg
    assert ui.sparkline([], threshold=0.5) == ""


def test_the_validation_page_lists_failed_expectations_first():
    from include.nightshift.validation import expectation_rows

    result = {
        "success": False,
        "statistics": {"evaluated_expectations": 2, "unsuccessful_expectations": 1},
        "expectations": [
            {
                "expectation_type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "customer_id"},
                "success": True,
                "result": {"unexpected_count": 0, "element_count": 10, "unexpected_percent": 0.0},
            },
            {
                "expectation_type": "expect_column_values_to_be_between",
                "kwargs": {"column": "tenure_months", "min_value": 0, "max_value": 120},
                "success": False,
                "result": {
                    "unexpected_count": 2,
                    "element_count": 10,
                    "unexpected_percent": 20.0,
                    "partial_unexpected_counts": [{"value": -5, "count": 2}],
                },
            },
        ],
    }
    summary = {"suite": "churn_raw_features", "success": False, "statistics": result["statistics"], "rows": 10}
    summary["result_uri"] = "file:///work/churn/validation/x/churn_raw_features.json"

    html = render_validation(summary, expectation_rows(result))

    assert 'data-field="verdict">failed<' in html and 'data-field="failed-count">1<' in html
    failed = html.index("tenure_months")
    assert failed < html.index("customer_id"), "the failed expectation comes first"
    assert "2 of 10 rows break it (20.00%), e.g. [-5]" in html


def test_the_validation_page_says_when_the_full_result_cannot_be_read():
    summary = {
        "suite": "churn_raw_labels",
        "success": False,
        "statistics": {"evaluated_expectations": 3, "unsuccessful_expectations": 1},
        "rows": 10,
        "result_uri": "s3://lake/work/churn/validation/x/churn_raw_labels.json",
        "failures": ["expect_column_values_to_be_in_set(column=churned, value_set=[0, 1]): 2 of 10 rows break it"],
    }
    problem = "the full result at s3://lake/work/churn/validation/x/churn_raw_labels.json could not be read: OSError"

    html = render_validation(summary, [], problem)

    assert 'data-field="problem">the full result at s3://lake/' in html
    assert "expect_column_values_to_be_in_set(column=churned, value_set=[0, 1]): 2 of 10 rows break it" in html


WORK = "file:///srv/nightshift/work"


def _key():
    from include.nightshift.validation import TaskKey

    return TaskKey("churn_scoring", "manual__2026-11-20T00:00:00+00:00", "validate_output")


def test_the_result_page_reads_the_result_where_the_platform_keeps_it():
    expected = f"{WORK}/validation/churn_scoring/manual__2026-11-20T00_00_00_00_00/validate_output/gx_result.json"
    result = {"success": True, "expectations": [{"expectation_type": "expect_x", "kwargs": {}, "success": True}]}
    read: list[str] = []

    def read_bytes(uri: str) -> bytes:
        read.append(uri)
        return json.dumps(result).encode()

    summary = {"suite": "churn_scored_output", "success": True, "statistics": {}, "rows": 5, "result_uri": expected}
    shown, full, problem, uri = ui.read_result(summary, _key(), WORK, read_bytes)

    assert (read, uri, problem, full) == ([expected], expected, None, result)
    assert shown["suite"] == "churn_scored_output"


@pytest.mark.parametrize(
    "claimed",
    [
        "file:///srv/nightshift/.local/secrets.json",
        f"{WORK}/../secrets.json",
        f"{WORK}/validation/churn_training/other_run/validate_raw_features/gx_result.json",
        "s3://someone-elses-bucket/x.json",
    ],
    ids=["outside", "traversal", "another-task", "another-bucket"],
)
def test_the_result_page_refuses_a_summary_that_names_another_location(claimed):
    def read_bytes(uri: str) -> bytes:
        raise AssertionError(f"nothing may be read, but {uri} was")

    summary = {"suite": "<b>forged</b>", "success": True, "rows": 1, "failures": ["forged"], "result_uri": claimed}
    shown, full, problem, uri = ui.read_result(summary, _key(), WORK, read_bytes)

    assert full == {} and uri is None
    assert problem.startswith("refused: the task's summary names its full result at ")
    assert shown["suite"] is None and shown["failures"] == [], "nothing of a refused summary is shown"
    html = ui.render_validation("churn_scoring", "r", "validate_output", shown, [], problem, "http://a", uri)
    assert 'data-field="problem">refused' in html and "forged" not in html


def test_the_result_page_shows_a_summary_of_the_wrong_shape_without_failing():
    shown, full, problem, _ = ui.read_result({"statistics": "x", "failures": 3}, _key(), WORK, lambda u: b"{}")
    assert (shown["statistics"], shown["failures"], full) == ({}, [], {})
    assert problem.startswith("the task kept no full result")
    assert ui.read_result(["not", "a", "dict"], _key(), WORK, lambda u: b"{}")[2].startswith("the task's summary is")


def test_the_page_shows_the_shadow_comparison_day_by_day_and_the_worst_slice():
    from include.nightshift.overview import ShadowDay, WorstSlice

    m = full_model()
    m.promotion_mode, m.shadow_days = "shadow", 3
    m.shadow = [
        ShadowDay(date(2026, 11, 16), 1800, "roc_auc", 3, 0.780, 5, 0.791),
        ShadowDay(date(2026, 11, 15), 1750, "roc_auc", 3, 0.785, 5, 0.772),
    ]
    m.shadow_decision = {"action": "entered", "version": 5, "decided_at": NOW, "reason": "passed the offline gate"}
    reason = "region=south (380 rows): roc_auc 0.5444 breaks monitoring.performance_floors.roc_auc (>= 0.7)"
    m.worst_slice = WorstSlice(date(2026, 11, 16), "region", "south", 380, "roc_auc", 0.5444, True, [reason])

    html = render([m])

    assert 'data-field="shadow-summary">v5 against champion v3: 2 of 3 labelled days<' in html
    assert '<td>2026-11-16</td><td>1,800</td><td>0.780</td><td class="passed">0.791</td>' in html
    assert '<td>2026-11-15</td><td>1,750</td><td>0.785</td><td class="rejected">0.772</td>' in html
    assert 'data-field="shadow-decision">entered v5' in html
    assert 'data-field="worst-slice">region=south · roc_auc 0.544<' in html
    assert "380 labelled rows · breaks the spec" in html and "(&gt;= 0.7)" in html
    assert 'href="http://airflow:8080/dags/churn_shadow" target="_top"' in html


def test_a_gate_mode_model_shows_no_shadow_part():
    html = render([full_model()])
    assert "shadow-summary" not in html and "worst-slice" not in html and "churn_shadow" not in html
