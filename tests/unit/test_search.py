"""training.search: bad search spaces are spec errors, trials are drawn deterministically, the best trial
is chosen in the metric's direction, and a trial validates on the last days of the training part."""

from __future__ import annotations

import copy
from datetime import date, timedelta

import pytest
import yaml

from include.nightshift.errors import SpecError
from include.nightshift.spec import DEFAULT_MODELS_DIR, load_spec

pytestmark = pytest.mark.unit

SPACE = {
    "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
    "max_depth": {"low": 2, "high": 8, "type": "int"},
    "max_leaf_nodes": {"choices": [15, 31, 63]},
}


def _spec(tmp_path, search, algorithm=None):
    raw = yaml.safe_load((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["training"]["search"] = search
    if algorithm:
        raw["training"]["algorithm"] = algorithm
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        pytest.param(
            {"space": {"C": {"low": 0.1, "high": 1}}},
            ["churn.yaml", "key 'training'", "training.search.space", "'C' is not a parameter", "HistGradientBoosting"],
            id="not-a-parameter-of-the-estimator",
        ),
        pytest.param(
            {"space": {"max_depth": {"low": 8, "high": 2, "type": "int"}}},
            ["key 'training.search.space.max_depth", "low (8.0) must be smaller than high (2.0)"],
            id="low-not-below-high",
        ),
        pytest.param(
            {"space": {"learning_rate": {"low": 0, "high": 1, "log": True}}},
            ["key 'training.search.space.learning_rate", "log: true needs low > 0", "got low 0.0"],
            id="log-with-zero-low",
        ),
        pytest.param(
            {"space": {"max_depth": {"choices": []}}},
            ["key 'training.search.space.max_depth", "at least 1 item", "(got [])"],
            id="empty-choices",
        ),
        pytest.param(
            {"n_trials": 201, "space": {"max_depth": {"choices": [3]}}},
            ["key 'training.search.n_trials'", "(got 201)", "less than or equal to 200"],
            id="too-many-trials",
        ),
        pytest.param(
            {"n_trials": 0, "space": {"max_depth": {"choices": [3]}}},
            ["key 'training.search.n_trials'", "(got 0)", "greater than or equal to 1"],
            id="no-trials",
        ),
        pytest.param(
            {"validation_days": 24, "space": {"max_depth": {"choices": [3]}}},
            ["training.search.validation_days (24)", "must be smaller than the training part", "= 24 days"],
            id="validation-days-fill-the-training-part",
        ),
        pytest.param(
            {"validation_days": 0, "space": {"max_depth": {"choices": [3]}}},
            ["key 'training.search.validation_days'", "(got 0)"],
            id="no-validation-days",
        ),
        pytest.param(
            {"metric": "rmse", "space": {"max_depth": {"choices": [3]}}},
            ["key 'training.search.metric'", "'rmse' does not exist for target.type binary"],
            id="metric-of-another-type",
        ),
        pytest.param({}, ["key 'training.search.space'", "Field required"], id="no-space"),
        pytest.param(
            {"space": {"max_depth": {"low": 1.5, "high": 4, "type": "int"}}},
            ["type int needs whole-number bounds", "low 1.5"],
            id="int-range-with-fraction",
        ),
    ],
)
def test_bad_search_is_a_spec_error_naming_file_key_rule_and_value(tmp_path, search, expected):
    with pytest.raises(SpecError) as exc:
        _spec(tmp_path, search)
    for part in expected:
        assert part in str(exc.value)


def test_space_is_checked_against_the_spec_algorithm(tmp_path):
    spec = _spec(tmp_path, {"space": {"C": {"low": 0.01, "high": 10, "log": True}}}, algorithm="logistic_regression")
    assert set(spec.training.search.space) == {"C"}
    assert spec.training.search.metric_for(spec.headline_metric) == "roc_auc"


def test_sampling_is_deterministic_within_bounds_and_seed_dependent(tmp_path):
    from include.nightshift.search import sample_trials

    spec = _spec(tmp_path, {"n_trials": 25, "seed": 7, "space": SPACE})
    first, again = sample_trials(spec.training.search), sample_trials(spec.training.search)
    assert first == again
    assert len(first) == 25
    for p in first:
        assert 0.01 <= p["learning_rate"] <= 0.3
        assert isinstance(p["max_depth"], int) and 2 <= p["max_depth"] <= 8
        assert p["max_leaf_nodes"] in (15, 31, 63)
    assert len({p["max_depth"] for p in first}) > 3  # the range is explored, not one value
    other = _spec(tmp_path, {"n_trials": 25, "seed": 8, "space": SPACE})
    assert sample_trials(other.training.search) != first
    reordered = _spec(tmp_path, {"n_trials": 25, "seed": 7, "space": dict(reversed(list(SPACE.items())))})
    assert sample_trials(reordered.training.search) == first


def test_log_scale_draws_spread_over_orders_of_magnitude(tmp_path):
    from include.nightshift.search import sample_trials

    spec = _spec(tmp_path, {"n_trials": 200, "space": {"learning_rate": {"low": 0.0001, "high": 1, "log": True}}})
    values = [p["learning_rate"] for p in sample_trials(spec.training.search)]
    below = sum(v < 0.01 for v in values)  # half the log range: about half the draws (uniform: ~1 %)
    assert 60 < below < 140


def _result(index, metric, value):
    from include.nightshift.search import TrialResult

    return TrialResult(index, {"i": index}, metric, value, 100, 10, 0.1)


@pytest.mark.parametrize(
    ("metric", "values", "best"),
    [
        pytest.param("roc_auc", [0.7, 0.9, 0.8], 1, id="higher-is-better"),
        pytest.param("log_loss", [0.7, 0.9, 0.3], 2, id="lower-is-better"),
        pytest.param("rmse", [2.0, float("nan"), 1.0], 2, id="nan-never-wins"),
        pytest.param("roc_auc", [0.8, 0.8, 0.7], 0, id="tie-lowest-index"),
    ],
)
def test_best_trial_respects_the_metric_direction(metric, values, best):
    from include.nightshift.search import best_trial

    assert best_trial([_result(i, metric, v) for i, v in enumerate(values)]).index == best


def test_trial_fits_on_the_training_part_and_validates_on_its_last_days(tmp_path):
    import pandas as pd

    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.search import run_trial, validation_split

    spec = _spec(tmp_path, {"n_trials": 2, "validation_days": 3, "space": {"max_iter": {"choices": [5, 10]}}})
    end = date(2026, 11, 20)
    root = (tmp_path / "landing").as_uri()
    generate(spec, root, SampleOptions(start=end - timedelta(days=9), end=end, rows_per_day=300, label_delay_days=0))
    from include.nightshift.datasets import partition_uris, read_partitions
    from include.nightshift.storage import Storage

    days = [end - timedelta(days=i) for i in range(10)]
    features = read_partitions(Storage(), partition_uris(spec, root, days, "features"))
    labels = read_partitions(Storage(), partition_uris(spec, root, days, "labels"))
    train = features.merge(labels[["customer_id", "feature_date", "churned"]], on=["customer_id", "feature_date"])
    fit, validation = validation_split(spec, train, 3)
    assert pd.to_datetime(fit["feature_date"]).max() < pd.to_datetime(validation["feature_date"]).min()
    assert sorted(pd.to_datetime(validation["feature_date"]).dt.date.unique()) == [
        end - timedelta(days=i) for i in (2, 1, 0)
    ]
    result = run_trial(spec, "hist_gradient_boosting", 1, {"max_iter": 5}, train)
    assert result.metric == "roc_auc" and 0.0 <= result.value <= 1.0
    assert (result.fit_rows, result.validation_rows) == (len(fit), len(validation))
    assert result.params == {"max_iter": 5}
