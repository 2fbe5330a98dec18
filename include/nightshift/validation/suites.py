"""The GX suite of each stage: expectations derived from the spec, then the hand-written ones.

Suites are built per stage:
- ``raw_features`` / ``raw_labels``: the landing partitions of a window;
- ``training_set``: the joined, split training data;
- ``scoring_input``: the day to score (row rules tolerate up to ``scoring.max_quarantine_fraction``:
  those rows are quarantined row by row while scoring, the suite fails the day above it);
- ``scored_output``: the day's rows as loaded into PostgreSQL, validated in the database (GX's SQL
  data source) before they are published.

The spec gives the columns, types, ranges, categories and nullability; hand-written expectations
live in ``great_expectations/expectations/<model>_<stage>.json`` (GX's suite JSON) and are added.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.nightshift.datasets import DATE_COLUMN
from include.nightshift.errors import DataValidationError
from include.nightshift.validation.schema import suite_name

if TYPE_CHECKING:
    import great_expectations as gx

    from include.nightshift.spec import Feature, ModelSpec
    from include.nightshift.validation.schema import Stage

GX_DIR = Path(__file__).resolve().parents[3] / "great_expectations"
NUMBER_TYPES = ["int8", "int16", "int32", "int64", "float32", "float64", "Int64", "Float64"]


FINITE = {"min_value": -1.7976931348623157e308, "max_value": 1.7976931348623157e308}


def _output_columns(spec: ModelSpec) -> list[dict[str, Any]]:
    """The scored columns of the model's type: probabilities in 0..1, labels and classes it can give."""
    kind = spec.target.type
    probability = {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "score", "min_value": 0, "max_value": 1},
    }
    if kind == "regression":
        return [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "prediction"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "prediction", **FINITE}},
        ]
    if kind == "multiclass":
        classes = list(spec.target.classes or ())
        return [
            probability,
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "predicted_class", "value_set": classes},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "class_scores"}},
        ]
    return [
        probability,
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "predicted_label", "value_set": [0, 1]}},
    ]


def output_expectations(spec: ModelSpec, expected: dict[str, Any]) -> list[dict[str, Any]]:
    """What the loaded day must look like: every valid input row once, the type's outputs, one model version.

    Args:
        expected: ``rows`` (valid input rows), ``model_version`` and ``dag_run_id`` of the run.
    """
    # No not-null or unique check of the entity key: the staged table already has its primary key
    # (key, score_date) and a CHECK pinning score_date to the one day (warehouse/staging.py), so
    # PostgreSQL guarantees both; on 10M rows GX's two scans for them cost about a third of this suite.
    return [
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": int(expected["rows"])}},
        *_output_columns(spec),
        # "Every row is of this version and this run" as a row condition, which GX evaluates in the one
        # aggregate query it bundles the other row conditions into; with the row count above (rows > 0)
        # it says what "distinct values equal {v}" says, which cost GX four scans per column (10M rows:
        # 8 of the suite's 12 s).
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "model_version", "value_set": [int(expected["model_version"])]},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "dag_run_id", "value_set": [expected["dag_run_id"]]},
        },
    ]


def _feature_expectations(f: Feature, tolerance: float) -> list[dict[str, Any]]:
    """One feature's expectations: present, not null (unless nullable), in its categories or range."""
    exps: list[dict[str, Any]] = [{"type": "expect_column_to_exist", "kwargs": {"column": f.name}}]
    mostly = min(f.mostly, tolerance)
    if not f.nullable:
        exps.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": f.name, "mostly": tolerance}})
    if f.type == "category":
        kwargs = {"column": f.name, "value_set": list(f.categories or ()), "mostly": mostly}
        return [*exps, {"type": "expect_column_values_to_be_in_set", "kwargs": kwargs}]
    exps.append(
        {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": f.name, "type_list": NUMBER_TYPES}}
    )
    if f.min is not None or f.max is not None:
        kwargs = {"column": f.name, "min_value": f.min, "max_value": f.max, "mostly": mostly}
        exps.append({"type": "expect_column_values_to_be_between", "kwargs": kwargs})
    return exps


def label_expectations(spec: ModelSpec) -> list[dict[str, Any]]:
    """The labels: present, and 0/1, one of ``target.classes``, or a finite number within ``target.min/max``."""
    t = spec.target
    exps: list[dict[str, Any]] = [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": t.name}}]
    if t.type == "binary":
        return [*exps, {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": t.name, "value_set": [0, 1]}}]
    if t.type == "multiclass":
        classes = list(t.classes or ())
        return [
            *exps,
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": t.name, "value_set": classes}},
        ]
    bounds = {
        "min_value": FINITE["min_value"] if t.min is None else t.min,
        "max_value": FINITE["max_value"] if t.max is None else t.max,
    }
    return [
        *exps,
        {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": t.name, "type_list": NUMBER_TYPES}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": t.name, **bounds}},
    ]


def derived_expectations(
    spec: ModelSpec, stage: str, min_rows: int = 1, expected: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Expectation configurations (GX JSON form) that follow from the spec (and, for output, the run)."""
    if stage == "scored_output":
        return output_expectations(spec, expected or {})
    key, target = spec.entity_key, spec.target.name
    # Scoring quarantines rows that break a row rule; the suite fails the day only above the threshold.
    tolerance = 1.0 - spec.scoring.max_quarantine_fraction if stage == "scoring_input" else 1.0
    exps: list[dict[str, Any]] = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": min_rows}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": key, "mostly": tolerance}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": [key, DATE_COLUMN]}},
    ]
    if stage in ("raw_labels", "training_set"):
        exps += label_expectations(spec)
    if stage == "raw_labels":
        return exps
    # Derived features are computed (and checked like the others) from the training set on.
    for f in spec.input_features if stage == "raw_features" else spec.features:
        exps += _feature_expectations(f, tolerance)
    if stage == "training_set" and spec.target.type == "binary":
        exps.append(
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": target, "min_value": 0.001, "max_value": 0.999},
            }
        )
    return exps


def handwritten_expectations(spec: ModelSpec, stage: str, gx_dir: Path = GX_DIR) -> list[dict[str, Any]]:
    """The expectations of suite ``<model>_<stage>`` in the GX file context at ``gx_dir`` (none if absent).

    Read through GX's own expectations store, so the files are exactly what GX itself loads and saves.
    """
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    try:
        context = gx.get_context(mode="file", context_root_dir=str(gx_dir))
        suite = context.suites.get(suite_name(spec, stage))
    except DataContextError as exc:
        if "was not found" in str(exc):
            return []
        raise DataValidationError(f"{gx_dir}: cannot read GX suite {suite_name(spec, stage)}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:  # malformed suite JSON: bad config, not a retry
        raise DataValidationError(
            f"{gx_dir}/expectations/{suite_name(spec, stage)}.json: cannot read GX suite: {exc}"
        ) from exc
    return [
        {"type": e.expectation_type, "kwargs": e.configuration.kwargs, "meta": dict(e.meta or {})}
        for e in suite.expectations
    ]


def build_suite(
    spec: ModelSpec, stage: Stage, gx_dir: Path = GX_DIR, expected: dict[str, Any] | None = None
) -> gx.ExpectationSuite:
    """The stage's suite: spec-derived expectations, then the hand-written ones.

    Args:
        expected: For ``scored_output``: the run's ``rows``, ``model_version`` and ``dag_run_id``.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    min_rows = spec.training.min_training_rows if stage == "training_set" else 1
    sources = [
        ("spec", derived_expectations(spec, stage, min_rows, expected)),
        ("hand-written", handwritten_expectations(spec, stage, gx_dir)),
    ]
    expectations = []
    for source, configs in sources:
        for c in configs:
            meta = {"source": source, **(c.get("meta") or {})}
            expectations.append(ExpectationConfiguration(type=c["type"], kwargs=c["kwargs"], meta=meta).to_domain_obj())
    return gx.ExpectationSuite(
        name=suite_name(spec, stage), expectations=expectations, meta={"model": spec.name, "stage": stage}
    )
