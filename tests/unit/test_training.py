"""The scikit-learn pipeline, the model input the signature expects, and the metrics the gate compares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.nightshift.datasets import build_training_set
from include.nightshift.spec import ALGORITHMS
from include.nightshift.training import build_pipeline, evaluate, model_input

pytestmark = pytest.mark.unit

METRICS = {"roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "f1", "positive_rate", "rows"}


@pytest.fixture(scope="module")
def training_set(small_spec, window_frames):
    """1200 training and 400 holdout rows from the generated sample."""
    window, features, labels = window_frames
    return build_training_set(small_spec, features, labels, window)


@pytest.mark.parametrize("algorithm", [pytest.param(a, id=a) for a in ALGORITHMS])
def test_every_algorithm_fits_and_predicts_probabilities(small_spec, training_set, algorithm):
    target = small_spec.target.name
    pipeline = build_pipeline(small_spec, algorithm)
    pipeline.fit(model_input(small_spec, training_set.train), training_set.train[target])

    proba = pipeline.predict_proba(model_input(small_spec, training_set.holdout))

    assert proba.shape == (len(training_set.holdout), 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # The sample has a real signal; every algorithm must find some of it.
    metrics = evaluate(training_set.holdout[target], proba[:, 1], small_spec.training.decision_threshold)
    assert metrics["roc_auc"] > 0.6, metrics


def test_pipeline_uses_the_spec_hyperparameters_and_seed(small_spec):
    clf = build_pipeline(small_spec, "random_forest").named_steps["classifier"]
    assert clf.n_estimators == 200
    assert clf.max_depth == 10
    assert clf.random_state == small_spec.training.random_seed


def test_fitted_pipeline_scores_unseen_categories_and_missing_values(small_spec, training_set):
    target = small_spec.target.name
    pipeline = build_pipeline(small_spec, "logistic_regression")
    pipeline.fit(model_input(small_spec, training_set.train), training_set.train[target])

    tomorrow = training_set.holdout.head(3).copy()
    tomorrow["region"] = "atlantis"  # a region the model never saw
    tomorrow["payment_method"] = None
    tomorrow["total_charges"] = np.nan
    proba = pipeline.predict_proba(model_input(small_spec, tomorrow))[:, 1]

    assert np.isfinite(proba).all()
    assert ((proba >= 0) & (proba <= 1)).all()


def test_unknown_algorithm_is_rejected(small_spec):
    with pytest.raises(ValueError, match="algorithm 'xgboost' is not one of") as exc:
        build_pipeline(small_spec, "xgboost")
    for name in ALGORITHMS:
        assert name in str(exc.value)


def test_model_input_casts_to_the_signature_dtypes(spec):
    raw = pd.DataFrame(
        {
            "region": ["north", "south"],
            "customer_id": [1, 2],
            "tenure_months": np.array([3, 4], dtype="int64"),
            "monthly_charges": [10.5, 20.0],
            "total_charges": [np.nan, 100.0],
            "support_calls_30d": np.array([0, 2], dtype="int32"),
            "data_usage_gb": [1.0, None],
            "contract_type": ["one-year", np.nan],
            "payment_method": pd.Series([None, "card"], dtype="string"),
        }
    )
    out = model_input(spec, raw)

    assert list(out.columns) == spec.feature_names  # spec order, key dropped
    for name in spec.numeric_features:
        assert out[name].dtype == "float64", name
    for name in spec.categorical_features:
        assert out[name].dtype == object, name
    assert out["tenure_months"].tolist() == [3.0, 4.0]
    assert out["contract_type"].tolist() == ["one-year", None]
    assert out["payment_method"].tolist() == [None, "card"]
    assert raw["tenure_months"].dtype == "int64"  # the input is not modified


def test_model_input_fails_on_a_missing_feature(spec):
    with pytest.raises(KeyError, match="monthly_charges"):
        model_input(spec, pd.DataFrame({"tenure_months": [1]}))


def test_evaluate_returns_every_metric():
    metrics = evaluate([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.6], threshold=0.5)
    assert set(metrics) == METRICS
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["rows"] == 4.0
    assert metrics["positive_rate"] == 0.5


def test_perfect_scores_get_perfect_metrics():
    metrics = evaluate([0, 0, 1, 1], [0.0, 0.1, 0.9, 1.0], threshold=0.5)
    assert metrics["roc_auc"] == 1.0
    assert metrics["pr_auc"] == 1.0
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 1.0
    assert metrics["log_loss"] < 0.1  # scores 0 and 1 are clipped: finite, not inf
    assert metrics["brier"] < 0.01


def test_reversed_scores_get_the_worst_auc():
    metrics = evaluate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], threshold=0.5)
    assert metrics["roc_auc"] == 0.0
    assert metrics["recall"] == 0.0


@pytest.mark.parametrize(
    ("threshold", "precision", "recall"),
    [
        pytest.param(0.35, 0.5, 1.0, id="below-every-score-flags-all"),
        pytest.param(0.45, 0.0, 0.0, id="above-every-score-flags-none"),
    ],
)
def test_threshold_decides_precision_and_recall(threshold, precision, recall):
    metrics = evaluate([0, 1, 0, 1], [0.4, 0.4, 0.4, 0.4], threshold=threshold)
    assert metrics["precision"] == precision
    assert metrics["recall"] == recall


def test_loading_a_model_does_not_flood_the_task_log_with_airflow_shim_warnings():
    """skops walks sys.modules to find the module of an object without one; in a task process that trips
    Airflow's deprecated-attribute shims once per module and name. The load silences exactly those."""
    import contextlib
    import warnings

    import airflow.macros  # noqa: F401 - a shim module, loaded in every task process
    from skops.io._utils import whichmodule

    from include.nightshift.evaluation import quiet_skops_load

    class Anonymous:  # like a ufunc: no module of its own
        __module__ = None  # type: ignore[assignment]

    def lookup(quiet: bool) -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_skops_load() if quiet else contextlib.nullcontext():
                whichmodule(Anonymous(), "expit")
                warnings.warn("an unrelated FutureWarning still shows", FutureWarning, stacklevel=1)
        return [str(w.message) for w in seen]

    assert any(m.startswith("The `airflow.macros.expit` attribute is deprecated") for m in lookup(quiet=False))
    assert lookup(quiet=True) == ["an unrelated FutureWarning still shows"]
