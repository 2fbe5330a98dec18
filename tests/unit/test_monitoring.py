"""Monitoring library: the day's sample, Evidently's verdicts, realised performance, decay, the alert text."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from include.nightshift import monitoring
from include.nightshift.alerts import Alert, first_line, runbook_anchor, runbook_url
from include.nightshift.errors import DataValidationError
from include.nightshift.sample import SampleOptions, _population, features_for_day
from include.nightshift.storage import Storage

DAY = date(2026, 11, 20)


def day_frame(day: date, drift: bool, rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    opts = SampleOptions(
        start=DAY - timedelta(days=30), end=day, rows_per_day=rows, seed=seed, drift_from=day if drift else None
    )
    df, _ = features_for_day(_population(20_000, seed), day, opts)
    return df


def write_day(tmp_path, df, row_group_size=1000):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "features.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group_size)
    return path.as_uri()


def test_sample_day_is_seeded_bounded_and_spread_over_the_file(tmp_path, spec):
    df = day_frame(DAY, drift=False, rows=6000)
    df["tenure_months"] = np.arange(6000) // 1000  # which row group a row is in
    uri = write_day(tmp_path, df)

    a, total = monitoring.sample_day(Storage(), spec, uri, max_rows=1500, seed=42)
    b, _ = monitoring.sample_day(Storage(), spec, uri, max_rows=1500, seed=42)
    c, _ = monitoring.sample_day(Storage(), spec, uri, max_rows=1500, seed=43)

    assert total == 6000
    assert 1300 <= len(a) <= 1500
    pd.testing.assert_frame_equal(a, b)  # same file and seed: same rows
    assert not a.equals(c)
    assert list(a.columns) == spec.feature_names  # features only, typed for Evidently
    assert a["tenure_months"].dtype == "float64" and a["region"].dtype == object
    # Rows come from every row group in about equal numbers, not from the first ones.
    per_group = a["tenure_months"].value_counts()
    assert sorted(per_group.index) == [0, 1, 2, 3, 4, 5] and per_group.min() > 180


def test_sample_day_reads_a_small_day_whole(tmp_path, spec):
    uri = write_day(tmp_path, day_frame(DAY, drift=False, rows=800))
    sample, total = monitoring.sample_day(Storage(), spec, uri, max_rows=5000, seed=1)
    assert len(sample) == total == 800


def test_sample_day_keeps_each_rows_category_values_as_plain_strings(tmp_path, spec):
    """Category columns are read as dictionaries (each row group has its own) and come back as strings."""
    df = day_frame(DAY, drift=False, rows=4000)
    uri = write_day(tmp_path, df)

    sample, _ = monitoring.sample_day(Storage(), spec, uri, max_rows=5000, seed=1)

    for name in spec.categorical_features:
        assert sample[name].dtype == object and {type(v) for v in sample[name].dropna()} == {str}
        assert sample[name].fillna("<none>").tolist() == df[name].astype(object).fillna("<none>").tolist()


def test_sample_day_names_the_file_when_a_feature_is_missing(tmp_path, spec):
    uri = write_day(tmp_path, day_frame(DAY, drift=False, rows=500).drop(columns=["region"]))
    with pytest.raises(DataValidationError, match=r"features.parquet: columns \['region'\] of spec 'churn'"):
        monitoring.sample_day(Storage(), spec, uri, max_rows=1000, seed=1)


@pytest.fixture(scope="module")
def reference():
    return pd.concat([day_frame(DAY - timedelta(days=d), drift=False, rows=1500, seed=d) for d in range(10, 14)])


def test_evidently_flags_the_injected_drift_and_nothing_else(spec, reference):
    result = monitoring.run_evidently(spec, reference, day_frame(DAY, drift=True), html=False)

    by = {f.feature: f for f in result.features}
    assert set(by) == set(spec.feature_names)
    assert {f for f, v in by.items() if v.drifted} == {
        "monthly_charges",
        "total_charges",
        "support_calls_30d",
        "contract_type",
    }
    assert by["monthly_charges"].stattest == "Wasserstein distance (normed)"
    assert by["region"].stattest == "Jensen-Shannon distance"
    for f in result.features:  # the verdict is the statistic against the threshold
        assert f.drifted == (f.statistic >= f.threshold), f
    assert result.share == pytest.approx(0.5)


def test_evidently_finds_no_drift_on_a_clean_day_and_writes_a_report(spec, reference):
    result = monitoring.run_evidently(spec, reference, day_frame(DAY, drift=False))

    assert result.drifted == [] and result.share == 0.0
    assert "<html" in result.html[:2000].lower() and "contract_type" in result.html


def test_calibration_error_is_zero_when_scores_match_outcome_rates():
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    scores = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75]
    assert monitoring.calibration_error(labels, scores) == pytest.approx(0.0)
    # Every score 0.9, half positive: off by 0.4 everywhere.
    assert monitoring.calibration_error([1, 0] * 50, [0.9] * 100) == pytest.approx(0.4)


def test_realised_performance_joins_scores_with_labels_by_key(spec):
    rng = np.random.default_rng(0)
    keys = np.arange(1000)
    y = rng.integers(0, 2, 1000)
    scores = pd.DataFrame({"customer_id": keys, "score": np.clip(y * 0.6 + rng.random(1000) * 0.4, 0, 1)})
    labels = pd.DataFrame({"customer_id": keys[::-1], "churned": y[::-1]})  # other order
    labels = pd.concat([labels, pd.DataFrame({"customer_id": [99_999], "churned": [1]})])  # never scored

    m = monitoring.realised_performance(spec, scores, labels)

    assert m["labelled_rows"] == 1000
    assert m["roc_auc"] > 0.95
    assert 0 <= m["calibration_error"] <= 1
    assert m["mean_score"] == pytest.approx(scores["score"].mean())


def test_realised_performance_refuses_too_few_labels_or_one_class(spec):
    scores = pd.DataFrame({"customer_id": range(50), "score": 0.5})
    with pytest.raises(
        DataValidationError, match=r"only 50 scored rows have a label \(monitoring.min_labelled_rows is 200\)"
    ):
        monitoring.realised_performance(spec, scores, pd.DataFrame({"customer_id": range(50), "churned": 1}))
    scores = pd.DataFrame({"customer_id": range(500), "score": 0.5})
    with pytest.raises(DataValidationError, match="holds one class only"):
        monitoring.realised_performance(spec, scores, pd.DataFrame({"customer_id": range(500), "churned": 0}))


def test_decay_reasons_name_the_metric_the_value_and_the_rule(spec):
    # churn: performance_floors roc_auc 0.70, max_decay roc_auc 0.05
    assert monitoring.decay_reasons(spec, {"roc_auc": 0.78}, {"roc_auc": 0.80}) == []
    (floor,) = monitoring.decay_reasons(spec, {"roc_auc": 0.65}, {"roc_auc": 0.68})
    assert floor == "roc_auc 0.6500 breaks monitoring.performance_floors.roc_auc (>= 0.7)"
    (decay,) = monitoring.decay_reasons(spec, {"roc_auc": 0.72}, {"roc_auc": 0.80})
    assert (
        decay == "roc_auc 0.7200 is 0.0800 worse than the model's holdout 0.8000 (monitoring.max_decay.roc_auc is 0.05)"
    )


# --- alerts ---------------------------------------------------------------------------------------


def test_alert_text_has_every_fact_on_call_needs():
    alert = Alert(
        kind="task_failure",
        dag_id="churn_scoring",
        task_id="score",
        map_index=2,
        run_id="scheduled__2026-11-20T04:30:00+00:00",
        logical_date="2026-11-20T04:30:00+00:00",
        try_number=3,
        max_tries=2,
        error="duplicate customer_id values in the day: Key (customer_id)=(42) already exists",
        log_url="http://airflow:8080/dags/churn_scoring/runs/x/tasks/score/mapped/2?try_number=3",
        runbook_url=runbook_url("https://docs.example/runbook.md", "churn_scoring", "score"),
    )
    text = alert.text()
    for fact in (
        "churn_scoring.score[2] failed",
        "scheduled__2026-11-20T04:30:00+00:00",
        "2026-11-20T04:30:00+00:00",
        "3 of 3",
        "Key (customer_id)=(42)",
        "try_number=3",
        "https://docs.example/runbook.md#scoring-score",
    ):
        assert fact in text
    assert alert.subject.startswith("[nightshift] churn_scoring.score[2] failed: duplicate customer_id")
    assert '<a href="https://docs.example/runbook.md#scoring-score">' in alert.html()
    assert "<script>" not in Alert(kind="task_failure", dag_id="d", run_id="r", error="<script>").html()


@pytest.mark.parametrize(
    ("dag_id", "task_id", "anchor"),
    [
        ("churn_training", "gate", "training-gate"),
        ("churn_scoring", "resolve_run", "scoring-resolve_run"),
        ("upsell_v2_monitoring", "drift", "monitoring-drift"),
        ("broken_invalid_spec", "explain", "invalid_spec-explain"),
        ("churn_scoring", None, "scoring"),
    ],
)
def test_runbook_anchor_per_dag_kind_and_task(dag_id, task_id, anchor):
    assert runbook_anchor(dag_id, task_id) == anchor
    assert runbook_url(None, dag_id, task_id).endswith(f"docs/runbook.md#{anchor}")


def test_first_line_is_our_message_not_the_traceback():
    exc = ValueError("GX suite churn_scoring_input failed 1 of 29 expectations\n  - expect_column...\n")
    assert first_line(exc) == "GX suite churn_scoring_input failed 1 of 29 expectations"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(None) == "unknown error"
