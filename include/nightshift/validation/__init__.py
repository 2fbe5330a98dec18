"""Data validation with Great Expectations, one module per concern.

- :mod:`.schema`: the columns and types each stage expects, checked per landing file;
- :mod:`.suites`: each stage's GX suite (derived from the spec, plus hand-written expectations);
- :mod:`.run`: running a suite with GX Core on a frame or on a PostgreSQL table;
- :mod:`.report`: failures for people (the rule, what was observed, which files);
- :mod:`.results`: where a task keeps its full result (from the work root and the task's identity).

This package never imports Airflow.
"""

from include.nightshift.validation.report import describe_failures, expectation_rows, summarize
from include.nightshift.validation.results import InvalidTaskKeyError, TaskKey, claimed_elsewhere, result_uri
from include.nightshift.validation.run import ValidationReport, result_format, validate_frame, validate_table
from include.nightshift.validation.schema import (
    SOURCE_COLUMN,
    STAGES,
    Stage,
    expected_columns,
    read_stage,
    schema_problems,
    suite_name,
)
from include.nightshift.validation.suites import (
    GX_DIR,
    build_suite,
    derived_expectations,
    handwritten_expectations,
    output_expectations,
)

__all__ = [
    "GX_DIR",
    "InvalidTaskKeyError",
    "SOURCE_COLUMN",
    "STAGES",
    "Stage",
    "TaskKey",
    "ValidationReport",
    "build_suite",
    "claimed_elsewhere",
    "derived_expectations",
    "describe_failures",
    "expectation_rows",
    "expected_columns",
    "handwritten_expectations",
    "output_expectations",
    "read_stage",
    "result_format",
    "result_uri",
    "schema_problems",
    "suite_name",
    "summarize",
    "validate_frame",
    "validate_table",
]
