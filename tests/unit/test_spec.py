"""Model specs: the shipped spec loads, and every broken spec fails with a message an on-call reader can act on."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from include.nightshift.errors import SpecError
from include.nightshift.spec import (
    ALGORITHMS,
    DEFAULT_MODELS_DIR,
    load_model,
    load_spec,
    load_specs,
    models_dir,
)

pytestmark = pytest.mark.unit

CHURN_YAML = DEFAULT_MODELS_DIR / "churn.yaml"


@pytest.fixture(scope="module")
def churn_raw() -> dict:
    return yaml.safe_load(CHURN_YAML.read_text())


def write_spec(directory: Path, raw: object, file_name: str = "churn.yaml") -> Path:
    path = directory / file_name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- the shipped spec -------------------------------------------------------------------------


def test_churn_spec_loads_with_its_features_by_type(spec):
    assert spec.name == "churn"
    assert spec.entity_key == "customer_id"
    assert spec.target.name == "churned"
    assert spec.feature_names == [
        "tenure_months",
        "monthly_charges",
        "total_charges",
        "support_calls_30d",
        "data_usage_gb",
        "contract_type",
        "payment_method",
        "region",
    ]
    assert spec.numeric_features == [
        "tenure_months",
        "monthly_charges",
        "total_charges",
        "support_calls_30d",
        "data_usage_gb",
    ]
    assert spec.categorical_features == ["contract_type", "payment_method", "region"]


def test_churn_spec_carries_training_gate_and_landing_settings(spec):
    assert spec.training.algorithm in ALGORITHMS
    assert spec.training.holdout_days < spec.training.window_days
    assert spec.label_delay.days == 7
    assert spec.gate.floors == {"roc_auc": 0.70, "pr_auc": 0.30}
    assert spec.hyperparameters("logistic_regression") == {"C": 1.0, "max_iter": 500}
    assert spec.hyperparameters("random_forest")["n_estimators"] == 200
    assert (
        spec.landing.features("file:///data/landing/", "2026-01-02")
        == "file:///data/landing/churn/features/date=2026-01-02/part-0.parquet"
    )
    assert (
        spec.landing.labels("s3://bucket/landing", "2026-01-02")
        == "s3://bucket/landing/churn/labels/date=2026-01-02/part-0.parquet"
    )


def test_spec_is_frozen(spec):
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"


def test_hyperparameters_are_a_copy_callers_cannot_corrupt(spec):
    params = spec.hyperparameters("random_forest")
    params["n_estimators"] = 1
    assert spec.hyperparameters("random_forest")["n_estimators"] == 200


def test_load_specs_reads_every_yaml_in_a_directory_sorted(tmp_path, churn_raw):
    for name in ("zeta", "alpha"):
        write_spec(tmp_path, {**churn_raw, "name": name}, f"{name}.yaml")
    (tmp_path / "notes.txt").write_text("not a spec")
    assert [s.name for s in load_specs(tmp_path)] == ["alpha", "zeta"]


# --- broken specs -----------------------------------------------------------------------------


def _set(path: str, value: object):
    """A mutator that sets ``a.b.0.c`` in the raw spec."""

    def mutate(raw: dict) -> None:
        *parents, leaf = path.split(".")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return mutate


def _delete(path: str):
    def mutate(raw: dict) -> None:
        *parents, leaf = path.split(".")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[leaf]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _set("name", "Churn-Model"),
            ["key 'name'", "'Churn-Model'", "lower-case letter first"],
            id="model-name-with-capitals-and-dash",
        ),
        pytest.param(
            _set("name", "churn; drop table x"),
            ["key 'name'", "'churn; drop table x'", "lower-case letter first"],
            id="model-name-sql-injection",
        ),
        pytest.param(
            _set("entity_key", "customer id"),
            ["key 'entity_key'", "'customer id'", "lower-case letter first"],
            id="entity-key-with-space",
        ),
        pytest.param(
            _set("features.0.name", "Tenure Months"),
            ["key 'features.0.name'", "'Tenure Months'", "lower-case letter first"],
            id="feature-name-unsafe",
        ),
        pytest.param(
            _delete("features.5.categories"),
            ["key 'features.5'", "'contract_type'", "needs a non-empty 'categories' list"],
            id="category-without-categories",
        ),
        pytest.param(
            _set("features.0.min", 200),
            ["key 'features.0'", "'tenure_months'", "min 200.0 is greater than max 120.0"],
            id="min-greater-than-max",
        ),
        pytest.param(
            _set("features.0.type", "integer"),
            ["key 'features.0.type'", "'integer'", "'int', 'float' or 'category'"],
            id="unknown-feature-type",
        ),
        pytest.param(
            _set("training.holdout_days", 28),
            ["'training'", "holdout_days (28)", "must be smaller than window_days (28)"],
            id="holdout-not-smaller-than-window",
        ),
        pytest.param(
            _set("training.window_days", 1),
            ["key 'training.window_days'", "(got 1)", "greater than or equal to 2"],
            id="window-too-short",
        ),
        pytest.param(
            _set("training.algorithm", "xgboost"),
            ["key 'training.algorithm'", "'xgboost'", "'logistic_regression', 'random_forest' or"],
            id="unknown-algorithm-lists-allowed",
        ),
        pytest.param(
            _set("colour", "blue"),
            ["key 'colour'", "'blue'", "Extra inputs are not permitted"],
            id="unknown-top-level-key",
        ),
        pytest.param(
            _set("training.learning_rate", 0.1),
            ["key 'training.learning_rate'", "0.1", "Extra inputs are not permitted"],
            id="unknown-nested-key",
        ),
        pytest.param(
            _set("gate.max_regression.roc_auc", -0.01),
            ["key 'gate.max_regression'", "max_regression.roc_auc is -0.01", "must be >= 0"],
            id="negative-max-regression",
        ),
        pytest.param(
            _set("gate.floors.accuracy", 0.9),
            ["key 'gate.floors.accuracy", "(got 'accuracy')", "'roc_auc', 'pr_auc'"],
            id="floor-on-unknown-metric",
        ),
        pytest.param(
            _set("monitoring.drift_share", 0),
            ["key 'monitoring.drift_share'", "(got 0)", "greater than 0"],
            id="drift-share-zero",
        ),
        pytest.param(
            _set("monitoring.max_decay.roc_auc", -0.1),
            ["key 'monitoring.max_decay'", "max_decay.roc_auc is -0.1", "must be >= 0"],
            id="negative-max-decay",
        ),
        pytest.param(
            _set("monitoring.sample_rows", 10),
            ["key 'monitoring.sample_rows'", "(got 10)", "greater than or equal to 1000"],
            id="drift-sample-too-small",
        ),
        pytest.param(
            _set("alerts.email_to", ["oncall at example.com"]),
            ["key 'alerts.email_to'", "'oncall at example.com' is not an e-mail address"],
            id="bad-alert-address",
        ),
        pytest.param(
            _set("runs", {"retries": 20}),
            ["key 'runs.retries'", "(got 20)", "less than or equal to 10"],
            id="too-many-retries",
        ),
        pytest.param(
            _set("landing.features_uri", "{root}/churn/features/part-0.parquet"),
            ["key 'landing.features_uri'", "'{root}/churn/features/part-0.parquet'", "must contain '{date}'"],
            id="landing-uri-without-date",
        ),
        pytest.param(
            _set("landing.labels_uri", "/data/labels/date={date}.parquet"),
            ["key 'landing.labels_uri'", "'/data/labels/date={date}.parquet'", "must start with '{root}'"],
            id="landing-uri-without-scheme",
        ),
        pytest.param(
            _delete("target"),
            ["key 'target'", "<missing>", "Field required"],
            id="missing-target",
        ),
        pytest.param(
            _set("features.1.name", "tenure_months"),
            ["feature names must be unique", "tenure_months"],
            id="duplicate-feature",
        ),
        pytest.param(
            _set("features.0.name", "churned"),
            ["'churned'", "cannot be a feature"],
            id="target-used-as-feature",
        ),
    ],
)
def test_bad_spec_names_file_key_value_and_rule(tmp_path, churn_raw, mutate, expected):
    raw = copy.deepcopy(churn_raw)
    mutate(raw)
    path = write_spec(tmp_path, raw)

    with pytest.raises(SpecError) as exc:
        load_spec(path)

    message = str(exc.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_every_problem_in_a_spec_is_reported_at_once(tmp_path, churn_raw):
    raw = copy.deepcopy(churn_raw)
    raw["name"] = "Bad-Name"
    raw["training"]["window_days"] = 1
    path = write_spec(tmp_path, raw)

    with pytest.raises(SpecError, match=r"\(2 problem\(s\)\)") as exc:
        load_spec(path)
    assert "key 'name'" in str(exc.value)
    assert "key 'training.window_days'" in str(exc.value)


def test_file_name_must_match_model_name(tmp_path, churn_raw):
    path = write_spec(tmp_path, churn_raw, "retention.yaml")

    with pytest.raises(SpecError) as exc:
        load_spec(path)

    message = str(exc.value)
    assert str(path) in message
    assert "key 'name' is 'churn'" in message
    assert "'retention.yaml'" in message
    assert "must match" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("- churn\n- retention\n", "must be a mapping, got list", id="yaml-list"),
        pytest.param("just a string\n", "must be a mapping, got str", id="yaml-scalar"),
        pytest.param("", "must be a mapping, got NoneType", id="empty-file"),
        pytest.param("name: [unclosed\nowner: x\n", "not valid YAML", id="yaml-syntax-error"),
    ],
)
def test_unparseable_spec_file_names_the_file(tmp_path, text, expected):
    path = tmp_path / "churn.yaml"
    path.write_text(text)

    with pytest.raises(SpecError) as exc:
        load_spec(path)

    assert str(path) in str(exc.value)
    assert expected in str(exc.value)


def test_missing_spec_file_names_the_file(tmp_path):
    path = tmp_path / "churn.yaml"

    with pytest.raises(SpecError, match="cannot read model spec") as exc:
        load_spec(path)
    assert str(path) in str(exc.value)


# --- finding specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../churn", id="path-traversal"),
        pytest.param("Churn", id="capitals"),
        pytest.param("churn.yaml", id="with-extension"),
        pytest.param("", id="empty"),
    ],
)
def test_load_model_rejects_unsafe_names(monkeypatch, tmp_path, churn_raw, name):
    # A file that a traversal would reach must not be loaded.
    monkeypatch.setenv("NIGHTSHIFT_MODELS_DIR", str(tmp_path / "models"))
    write_spec(tmp_path, churn_raw)

    with pytest.raises(SpecError, match="lower-case letter first") as exc:
        load_model(name)
    assert repr(name) in str(exc.value)


def test_models_dir_defaults_to_include_models(monkeypatch):
    monkeypatch.delenv("NIGHTSHIFT_MODELS_DIR", raising=False)
    assert models_dir() == DEFAULT_MODELS_DIR
    assert load_model("churn").name == "churn"


def test_models_dir_env_overrides_where_specs_are_loaded_from(monkeypatch, tmp_path, churn_raw):
    write_spec(tmp_path, {**churn_raw, "name": "retention"}, "retention.yaml")
    monkeypatch.setenv("NIGHTSHIFT_MODELS_DIR", str(tmp_path))

    assert models_dir() == tmp_path
    assert load_model("retention").name == "retention"
    with pytest.raises(SpecError, match="cannot read model spec"):
        load_model("churn")  # exists in include/models, but not in the overriding directory


# --- runs.timeout_minutes ---------------------------------------------------------------------


def test_every_task_kind_has_a_default_timeout_and_the_spec_overrides_one(tmp_path, churn_raw):
    from include.nightshift.spec.timeouts import TIMEOUT_DEFAULTS

    raw = copy.deepcopy(churn_raw)
    raw.setdefault("runs", {})["timeout_minutes"] = {"score": 5}
    spec = load_spec(write_spec(tmp_path, raw))
    assert spec.runs.timeout_for("score") == 5
    assert spec.runs.timeout_for("train") == TIMEOUT_DEFAULTS["train"]
    assert set(TIMEOUT_DEFAULTS) == {"land", "validate", "train", "score", "publish", "monitor", "registry"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"scoring": 5}, ["runs.timeout_minutes: unknown task kind 'scoring'", "allowed: land, validate, train"]),
        ({"score": 0}, ["runs.timeout_minutes.score is 0", "allowed: 1 to 1440"]),
        ({"train": 100000}, ["runs.timeout_minutes.train is 100000"]),
    ],
    ids=["unknown-kind", "zero", "too-long"],
)
def test_bad_timeouts_name_the_key_and_the_allowed_values(tmp_path, churn_raw, value, expected):
    raw = copy.deepcopy(churn_raw)
    raw.setdefault("runs", {})["timeout_minutes"] = value
    path = write_spec(tmp_path, raw)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    for fragment in [str(path), *expected]:
        assert fragment in str(exc.value)


def test_a_timeout_alert_says_what_happened_after_how_long_and_what_to_do():
    from include.nightshift.spec.timeouts import task_kind, timeout_message

    message = timeout_message("churn", "score", 60)
    assert message.startswith("score timed out after 60 min (runs.timeout_minutes.score) and was stopped")
    assert "nothing it wrote was published" in message
    assert "raise runs.timeout_minutes.score in include/models/churn.yaml" in message
    assert "clear the task" in message
    assert [task_kind(t) for t in ("validate_input", "assemble", "drift", "resolve_run", "land")] == [
        "validate",
        "score",
        "monitor",
        "registry",
        "land",
    ]
