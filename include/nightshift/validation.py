"""Data validation: GX suites derived from the spec plus hand-written ones, and readable failures.

Suites are built per stage:
- ``raw_features`` / ``raw_labels``: the landing partitions of a window;
- ``training_set``: the joined, split training data;
- ``scoring_input``: the day to score (row rules tolerate up to ``scoring.max_quarantine_fraction``:
  those rows are quarantined row by row while scoring, the suite fails the day above it);
- ``scored_output``: the day's rows as loaded into PostgreSQL, validated in the database (GX's SQL
  data source) before they are published.

The spec gives the columns, types, ranges, categories and nullability; hand-written expectations
live in ``great_expectations/expectations/<model>_<stage>.json`` (GX's suite JSON) and are added.

GX validates one frame. Partitions are concatenated with a ``source_file`` column so a failed row
rule names the file it came from; a file whose *schema* is wrong (a missing column, text where a
number belongs) is reported per file before concatenation, because after it the column would only
show up as nulls or mixed types.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from include.nightshift.datasets import DATE_COLUMN, read_partitions
from include.nightshift.errors import DataValidationError

if TYPE_CHECKING:
    from datetime import date

    import great_expectations as gx
    import pandas as pd
    import pyarrow as pa

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)

Stage = Literal["raw_features", "raw_labels", "training_set", "scoring_input", "scored_output"]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
SOURCE_COLUMN = "source_file"
GX_DIR = Path(__file__).resolve().parents[2] / "great_expectations"


def suite_name(spec: ModelSpec, stage: str) -> str:
    return f"{spec.name}_{stage}"


# --- schema, per file -------------------------------------------------------------------------


def _arrow_kind(t: pa.DataType) -> str:
    import pyarrow.types as pat

    if pat.is_integer(t):
        return "int"
    if pat.is_floating(t) or pat.is_decimal(t):
        return "float"
    if pat.is_string(t) or pat.is_large_string(t) or pat.is_dictionary(t):
        return "string"
    if pat.is_boolean(t):
        return "bool"
    if pat.is_null(t):
        return "null"
    return str(t)


def expected_columns(spec: ModelSpec, stage: str) -> dict[str, set[str]]:
    """Column -> the Arrow kinds accepted for it in landing files of ``stage``."""
    if stage == "raw_labels":
        return {spec.entity_key: {"int", "string"}, spec.target.name: {"int", "bool", "float"}}
    cols = {spec.entity_key: {"int", "string"}}
    for f in spec.features:
        # An all-null column of a nullable feature is typed null by writers that cannot infer.
        kinds = {"int"} if f.type == "int" else {"int", "float"} if f.type == "float" else {"string"}
        cols[f.name] = (
            kinds
            | ({"null", "float"} if f.nullable and f.type == "int" else set())
            | ({"null"} if f.nullable else set())
        )
    return cols


def schema_problems(spec: ModelSpec, stage: str, uri: str, schema: pa.Schema) -> list[str]:
    problems = []
    present = {name: _arrow_kind(schema.field(name).type) for name in schema.names}
    for col, kinds in expected_columns(spec, stage).items():
        if col not in present:
            problems.append(f"{uri}: column '{col}' is missing (present: {', '.join(schema.names)})")
        elif present[col] not in kinds:
            want = " or ".join(sorted(k for k in kinds if k != "null"))
            problems.append(
                f"{uri}: column '{col}' has type {schema.field(col).type} ({present[col]}); the spec needs {want}"
            )
    return problems


def read_stage(storage: Storage, spec: ModelSpec, stage: Stage, uris: dict[date, str]) -> pd.DataFrame:
    """Read the partitions of a raw stage for validation, checking each file's schema first.

    Raises:
        DataValidationError: a file's schema breaks the spec (every such file is listed).
    """

    problems: list[str] = []
    schema_stage = "raw_features" if stage == "scoring_input" else stage
    for uri in uris.values():
        problems += schema_problems(spec, schema_stage, uri, storage.read_schema(uri))
    if problems:
        raise DataValidationError(
            f"suite {suite_name(spec, stage)}: {len(problems)} schema problem(s) in the landing files:\n  - "
            + "\n  - ".join(problems[:20])
        )
    return read_partitions(storage, uris, source_column=SOURCE_COLUMN)


# --- suites -----------------------------------------------------------------------------------


def output_expectations(spec: ModelSpec, expected: dict[str, Any]) -> list[dict[str, Any]]:
    """What the loaded day must look like: every valid input row once, probabilities, one model version.

    Args:
        expected: ``rows`` (valid input rows), ``model_version`` and ``dag_run_id`` of the run.
    """
    key = spec.entity_key
    return [
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": int(expected["rows"])}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": key}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": key}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "score", "min_value": 0, "max_value": 1}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "predicted_label", "value_set": [0, 1]}},
        {
            "type": "expect_column_distinct_values_to_equal_set",
            "kwargs": {"column": "model_version", "value_set": [int(expected["model_version"])]},
        },
        {
            "type": "expect_column_distinct_values_to_equal_set",
            "kwargs": {"column": "dag_run_id", "value_set": [expected["dag_run_id"]]},
        },
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
        exps += [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": target}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": target, "value_set": [0, 1]}},
        ]
    if stage == "raw_labels":
        return exps
    for f in spec.features:
        exps.append({"type": "expect_column_to_exist", "kwargs": {"column": f.name}})
        mostly = min(f.mostly, tolerance)
        if not f.nullable:
            exps.append(
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": f.name, "mostly": tolerance}}
            )
        if f.type == "category":
            exps.append(
                {
                    "type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": f.name, "value_set": list(f.categories or ()), "mostly": mostly},
                }
            )
        else:
            exps.append(
                {
                    "type": "expect_column_values_to_be_in_type_list",
                    "kwargs": {
                        "column": f.name,
                        "type_list": ["int8", "int16", "int32", "int64", "float32", "float64", "Int64", "Float64"],
                    },
                }
            )
            if f.min is not None or f.max is not None:
                exps.append(
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": f.name, "min_value": f.min, "max_value": f.max, "mostly": mostly},
                    }
                )
    if stage == "training_set":
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


def result_format(sql: bool = False) -> dict[str, Any]:
    """Enough detail to name columns, values and files, without every failing row."""
    if sql:  # a table in the database has no source-file column
        return {"result_format": "SUMMARY", "partial_unexpected_count": 5}
    return {"result_format": "SUMMARY", "partial_unexpected_count": 5, "unexpected_index_column_names": [SOURCE_COLUMN]}


# --- failures, for people ---------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy scalars as plain Python values, so messages read ``450.0`` and not ``np.float64(450.0)``."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value


def _describe_kwargs(kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k not in ("batch_id", "result_format") and v is not None}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _rule(e: dict[str, Any]) -> str:
    return f"{e['expectation_type']}({_describe_kwargs(e.get('kwargs', {}))})"


def _observed(e: dict[str, Any]) -> str:
    """What an expectation saw: rows that break it with examples and files, or the observed value."""
    r = e.get("result") or {}
    if "unexpected_count" in r:
        examples = [_plain(c["value"]) for c in r.get("partial_unexpected_counts", [])][:5]
        files = sorted(
            {row.get(SOURCE_COLUMN) for row in r.get("partial_unexpected_index_list") or [] if row.get(SOURCE_COLUMN)}
        )
        observed = (
            f"{r['unexpected_count']} of {r.get('element_count')} rows break it "
            f"({r.get('unexpected_percent') or 0:.2f}%)"
        )
        if r["unexpected_count"]:
            observed += f", e.g. {examples}"
        if files:
            observed += f", in {', '.join(files[:3])}"
        return observed
    if "observed_value" in r:
        return f"observed {_plain(r['observed_value'])!r}"
    return "column not found" if "column" in e.get("kwargs", {}) else "could not be evaluated"


def describe_failures(result: dict[str, Any], limit: int = 12) -> list[str]:
    """One line per failed expectation: the rule, what was observed, and which files.

    Args:
        result: A GX validation result as ``describe_dict()`` returns it.
    """
    lines = [f"{_rule(e)}: {_observed(e)}" for e in result.get("expectations", []) if not e.get("success")]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def expectation_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every expectation of a result, failed ones first: ``{"rule", "success", "observed"}``."""
    rows = [
        {"rule": _rule(e), "success": bool(e.get("success")), "observed": _observed(e)}
        for e in result.get("expectations", [])
    ]
    return sorted(rows, key=lambda row: row["success"])


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """A compact record of a validation (for MLflow and XCom): statistics and the failed rules."""
    return {
        "success": bool(result.get("success")),
        "statistics": result.get("statistics"),
        "failures": describe_failures(result),
    }
