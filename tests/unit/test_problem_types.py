"""Every common problem shape is one YAML: target types, estimators, derived features and sources, each
with the errors a spec author gets when a rule is broken."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from include.nightshift.errors import SpecError
from include.nightshift.spec import DEFAULT_MODELS_DIR, load_spec

pytestmark = pytest.mark.unit


def _raw(name: str) -> dict:
    return yaml.safe_load((DEFAULT_MODELS_DIR / f"{name}.yaml").read_text())


def _load(tmp_path: Path, raw: dict) -> object:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def _error(tmp_path: Path, raw: dict) -> str:
    with pytest.raises(SpecError) as exc:
        _load(tmp_path, raw)
    return str(exc.value)


@pytest.mark.parametrize("name", ["churn", "next_offer", "customer_spend"])
def test_each_shipped_example_loads(name):
    spec = load_spec(DEFAULT_MODELS_DIR / f"{name}.yaml")
    assert spec.target.type == {"churn": "binary", "next_offer": "multiclass", "customer_spend": "regression"}[name]


def test_derived_features_are_parsed_in_dependency_order_and_are_not_model_input():
    spec = load_spec(DEFAULT_MODELS_DIR / "next_offer.yaml")
    assert [name for name, _ in spec.derived] == ["charges_per_tenure_month", "tenure_band"]
    assert "tenure_band" in spec.categorical_features and "tenure_band" not in spec.input_names
    assert spec.input_names == [f.name for f in spec.features if not f.expr]


def _set(raw: dict, path: str, value: object) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return out


@pytest.mark.parametrize(
    ("model", "path", "value", "expected"),
    [
        pytest.param(
            "next_offer", "target.classes", None, ["needs 'classes'", "at least 3"], id="multiclass-no-classes"
        ),
        pytest.param("next_offer", "target.classes", ["a", "a", "b"], ["must be distinct"], id="classes-repeated"),
        pytest.param(
            "churn",
            "target.classes",
            ["a", "b", "c"],
            ["only applies to target.type multiclass"],
            id="classes-on-binary",
        ),
        pytest.param(
            "churn", "target.max", 10, ["target.min/max only apply to target.type regression"], id="range-on-binary"
        ),
        pytest.param(
            "customer_spend", "target.min", 6000, ["target.min 6000.0 is greater than target.max"], id="range-inverted"
        ),
        pytest.param(
            "churn",
            "target.type",
            "ranking",
            ["key 'target.type'", "'binary', 'multiclass' or 'regression'"],
            id="unknown-type",
        ),
        pytest.param(
            "churn",
            "gate.floors",
            {"rmse": 1.0},
            ["key 'gate.floors.rmse", "metric 'rmse' does not exist for target.type binary", "'roc_auc'"],
            id="regression-metric-on-binary",
        ),
        pytest.param(
            "customer_spend",
            "monitoring.max_decay",
            {"roc_auc": 0.1},
            ["key 'monitoring.max_decay.roc_auc", "for target.type regression", "'mae', 'rmse', 'r2' or 'mape'"],
            id="binary-metric-on-regression",
        ),
        pytest.param(
            "next_offer",
            "gate.max_regression",
            {"f1": 0.1},
            ["key 'gate.max_regression.f1", "'accuracy', 'f1_macro'"],
            id="f1-is-not-a-multiclass-metric",
        ),
        pytest.param(
            "customer_spend",
            "training.algorithm",
            "logistic_regression",
            ["key 'training.algorithm'", "'linear', 'ridge', 'random_forest' or 'hist_gradient_boosting'"],
            id="classifier-name-for-regression",
        ),
        pytest.param(
            "customer_spend",
            "training.algorithm",
            "sklearn.ensemble.RandomForestClassifier",
            ["key 'training.algorithm'", "is not a regressor, which target.type regression needs"],
            id="dotted-classifier-for-regression",
        ),
        pytest.param(
            "churn",
            "training.algorithm",
            "sklearn.ensemble.NoSuchForest",
            ["key 'training.algorithm'", "'sklearn.ensemble.NoSuchForest' cannot be imported"],
            id="dotted-path-not-importable",
        ),
        pytest.param(
            "churn",
            "training.algorithm",
            "os.path.join",
            ["key 'training.algorithm'", "is not a scikit-learn compatible estimator class"],
            id="dotted-path-not-an-estimator",
        ),
        pytest.param(
            "churn",
            "training.hyperparameters.hist_gradient_boosting",
            {"max_iter": 10, "n_estimators": 5},
            ["training.hyperparameters.hist_gradient_boosting", "'n_estimators' is not a parameter", "learning_rate"],
            id="unknown-hyperparameter",
        ),
        pytest.param(
            "churn",
            "training.hyperparameters.sklearn.svm.SVC",
            {},
            ["training.hyperparameters", "cannot give class probabilities"],
            id="classifier-without-probabilities",
        ),
    ],
)
def test_a_broken_rule_is_a_spec_error_naming_key_and_allowed(tmp_path, model, path, value, expected):
    raw = _raw(model)
    if path == "training.hyperparameters.sklearn.svm.SVC":
        raw = copy.deepcopy(raw)
        raw["training"]["hyperparameters"] = {"sklearn.svm.SVC": {}}
    else:
        raw = _set(raw, path, value)
    message = _error(tmp_path, raw)
    for part in expected:
        assert part in message, message


def test_a_dotted_estimator_with_its_own_parameters_loads(tmp_path):
    raw = _raw("customer_spend")
    raw["training"]["algorithm"] = "sklearn.ensemble.ExtraTreesRegressor"
    raw["training"]["hyperparameters"] = {"sklearn.ensemble.ExtraTreesRegressor": {"n_estimators": 20}}
    spec = _load(tmp_path, raw)
    assert spec.estimator().path == "sklearn.ensemble.ExtraTreesRegressor"
    assert "sklearn.ensemble.ExtraTreesRegressor" in spec.training_algorithms()


def test_builtin_parameter_lists_match_the_installed_scikit_learn():
    import importlib

    from include.nightshift.spec.estimators import PARAMETERS

    for path, names in PARAMETERS.items():
        module, _, cls = path.rpartition(".")
        assert set(getattr(importlib.import_module(module), cls)().get_params()) == names, path


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param("log(total_charges)", "unknown name 'log'", id="unknown-function"),
        pytest.param("tenure_months + bogus", "unknown name 'bogus'", id="unknown-feature"),
        pytest.param("__import__('os').system('x')", "unknown name '__import__'", id="no-escape"),
        pytest.param("region * 2", "arithmetic on text", id="text-arithmetic"),
        pytest.param("clip(tenure_months, 0)", "clip() takes 3 argument(s), got 2", id="arity"),
        pytest.param("where(tenure_months, 1, 0)", "a condition must be a comparison", id="non-boolean-condition"),
        pytest.param("[tenure_months]", "List is not part of the expression language", id="syntax-outside-language"),
        pytest.param("'a' + ", "not a valid expression", id="syntax-error"),
    ],
)
def test_an_expression_that_breaks_the_language_is_a_spec_error(tmp_path, expr, expected):
    raw = _raw("churn")
    raw["features"].append({"name": "derived_x", "type": "float", "expr": expr})
    message = _error(tmp_path, raw)
    assert "feature 'derived_x'" in message and expected in message, message


def test_a_derived_feature_of_the_wrong_type_or_in_a_cycle_is_a_spec_error(tmp_path):
    raw = _raw("churn")
    raw["features"].append({"name": "band", "type": "float", "expr": "where(tenure_months < 12, 'new', 'old')"})
    assert "has type 'float' but its expr" in _error(tmp_path, raw)
    raw = _raw("churn")
    raw["features"] += [
        {"name": "a_x", "type": "float", "expr": "b_x + 1"},
        {"name": "b_x", "type": "float", "expr": "a_x + 1"},
    ]
    assert "depend on each other in a cycle: ['a_x', 'b_x']" in _error(tmp_path, raw)


def test_sql_keywords_and_python_keywords_work_as_feature_names_in_expressions(tmp_path):
    from include.nightshift.features import derive

    raw = _raw("churn")
    raw["features"] += [
        {"name": "order", "type": "float", "nullable": True},
        {"name": "table", "type": "category", "categories": ["a", "b"], "nullable": True},
        {"name": "from", "type": "int", "min": 0},
        {"name": "select", "type": "float", "expr": "coalesce(order, 0) * from + where(table == 'a', 1, 0)"},
    ]
    spec = _load(tmp_path, raw)
    frame = pd.DataFrame({"order": [1.5, None], "table": ["a", "b"], "from": [2, 3]})
    assert derive(spec, frame)["select"].tolist() == [4.0, 0.0]


@pytest.mark.parametrize(
    ("landing", "expected"),
    [
        pytest.param(
            {"conn_id": "warehouse", "features_query": "SELECT 1 WHERE d = %(date)s"},
            "needs landing.conn_id",
            id="sql-half",
        ),
        pytest.param(
            {"conn_id": "w", "features_query": "SELECT * FROM f", "labels_query": "SELECT * FROM l WHERE d = %(date)s"},
            "must take the day as %(date)s",
            id="query-without-date",
        ),
        pytest.param(
            {
                "conn_id": "w",
                "features_query": "SELECT * FROM f WHERE d = %(date)s AND r = %(region)s",
                "labels_query": "SELECT * FROM l WHERE d = %(date)s",
            },
            "found ['date', 'region']",
            id="query-with-another-parameter",
        ),
        pytest.param(
            {"conn_id": "bad id!", "features_query": "a %(date)s", "labels_query": "b %(date)s"},
            "is not an Airflow connection id",
            id="bad-conn-id",
        ),
        pytest.param(
            {"format": "xlsx", "features_uri": "{root}/{date}.x", "labels_uri": "{root}/{date}.y"},
            "'parquet' or 'csv'",
            id="format",
        ),
    ],
)
def test_landing_rules(tmp_path, landing, expected):
    raw = _raw("churn")
    raw["landing"] = landing
    message = _error(tmp_path, raw)
    assert expected in message, message


# --- metrics, outputs and encoders by type -----------------------------------------------------------


def test_multiclass_metrics_read_probabilities_in_the_classes_order():
    from include.nightshift.metrics import evaluate

    classes = ("none", "discount", "upgrade")  # not sorted: the columns follow this order
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    perfect = evaluate(["none", "discount", "upgrade"], proba, target_type="multiclass", classes=classes)
    assert perfect["accuracy"] == 1.0 and perfect["f1_macro"] == 1.0
    assert perfect["log_loss"] == pytest.approx(-np.log(0.8))


def test_regression_metrics():
    from include.nightshift.metrics import evaluate

    m = evaluate([10.0, 20.0, 0.0], [12.0, 18.0, 1.0], target_type="regression")
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(9 / 3))
    assert m["mape"] == pytest.approx((0.2 + 0.1) / 2), "rows whose truth is 0 are left out of MAPE"


def test_multiclass_rows_carry_the_class_its_probability_and_every_class_as_json():
    import pyarrow as pa

    from include.nightshift.scoring.encode import classes_csv

    proba = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    text = classes_csv(pa.array([1, 2]), proba, ("none", 'say "hi"', "bundle")).decode()
    rows = list(__import__("csv").reader(text.splitlines()))
    assert [r[:3] for r in rows] == [["1", 'say "hi"', "0.7"], ["2", "none", "0.5"]]
    assert json.loads(rows[0][3]) == {"none": 0.2, 'say "hi"': 0.7, "bundle": 0.1}


def test_regression_rows_in_binary_copy_format():
    import pyarrow as pa

    from include.nightshift.scoring.encode import prediction_binary

    raw = prediction_binary(pa.array([7], pa.int64()), np.array([123.5]))
    assert int.from_bytes(raw[:2], "big") == 2  # two fields: key and prediction
    assert int.from_bytes(raw[6:14], "big") == 7
    assert np.frombuffer(raw[18:26], ">f8")[0] == 123.5


# --- CSV landing ------------------------------------------------------------------------------------


def _csv_spec():
    return load_spec(DEFAULT_MODELS_DIR / "customer_spend.yaml")


def test_a_csv_day_is_landed_as_parquet_with_the_declared_types(tmp_path):
    from datetime import date

    import pyarrow.parquet as pq

    from include.nightshift import sources
    from include.nightshift.storage import Storage

    spec, day = _csv_spec(), date(2026, 11, 20)
    paths = sources.DataPaths(tmp_path.as_uri() + "/landing", tmp_path.as_uri() + "/work")
    src = Path(sources.source_uri(spec, paths, "features", day).removeprefix("file://"))
    src.parent.mkdir(parents=True)
    src.write_text(
        "customer_id,tenure_months,monthly_charges,support_calls_30d,data_usage_gb,contract_type,region,extra\n"
        "1,12,50.5,0,,one-year,north,x\n2,3,20,1,4.5,month-to-month,south,y\n"
    )
    landed = sources.land_day(Storage(), spec, paths, "features", day)

    assert landed.rows == 2 and landed.uri.endswith(f"/work/customer_spend/landed/features/date={day}/part-0.parquet")
    table = pq.read_table(landed.uri.removeprefix("file://"))
    assert table.schema.names == ["customer_id", *spec.input_names], "only the spec's columns, in its order"
    assert str(table.schema.field("tenure_months").type) == "int64"
    assert str(table.schema.field("monthly_charges").type) == "double"
    assert table.column("data_usage_gb").to_pylist() == [None, 4.5]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("customer_id,tenure_months\n1,2\n", "missing monthly_charges", id="missing-columns"),
        pytest.param(
            "customer_id,tenure_months,monthly_charges,support_calls_30d,data_usage_gb,contract_type,region\n"
            "1,twelve,50,0,1,one-year,north\n",
            "does not have the type the spec declares",
            id="text-in-an-int-column",
        ),
    ],
)
def test_a_bad_csv_day_fails_naming_the_file(tmp_path, body, expected):
    from datetime import date

    from include.nightshift import sources
    from include.nightshift.errors import DataValidationError
    from include.nightshift.storage import Storage

    spec, day = _csv_spec(), date(2026, 11, 20)
    paths = sources.DataPaths(tmp_path.as_uri(), tmp_path.as_uri() + "/work")
    src = Path(sources.source_uri(spec, paths, "features", day).removeprefix("file://"))
    src.parent.mkdir(parents=True)
    src.write_text(body)
    with pytest.raises(DataValidationError) as exc:
        sources.land_day(Storage(), spec, paths, "features", day)
    assert expected in str(exc.value) and str(src) in str(exc.value), exc.value
    assert not Storage().exists(sources.day_uri(spec, paths, "features", day)), "nothing half-written"


# --- the model contract ------------------------------------------------------------------------------


def test_the_contract_keeps_the_versions_features_when_the_spec_changes():
    from include.nightshift.contract import ContractError, ModelContract

    old = load_spec(DEFAULT_MODELS_DIR / "churn.yaml")
    contract = ModelContract.model_validate(json.loads(json.dumps(ModelContract.of(old).model_dump(mode="json"))))
    edited = old.model_copy(update={"features": old.features[:-1]})  # today's spec dropped "region"
    assert "region" in contract.apply(edited).feature_names, "the version still needs its own features"
    with pytest.raises(ContractError) as exc:
        contract.check_columns("churn", 3, "file:///day.parquet", [c for c in old.input_names if c != "region"])
    message = str(exc.value)
    assert "no column(s) region, which churn version 3" in message
    assert "retrain churn" in message and "restore the column(s)" in message
