"""Running a stage's GX suite with GX Core: on a frame (pandas) or on a table in PostgreSQL.

We call GX Core directly rather than through the Airflow GX provider: its operators add an XCom push
of the full result and a get-or-create naming of data sources, neither of which we want (the full
result goes to the work root, and every run builds its suite from the spec), and its metadata pins
``structlog`` below what current Airflow needs. The data path is the same one the provider uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.validation.report import describe_failures
from include.nightshift.validation.schema import SOURCE_COLUMN, suite_name
from include.nightshift.validation.suites import GX_DIR, build_suite

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from include.nightshift.spec import ModelSpec
    from include.nightshift.validation.schema import Stage


def result_format(sql: bool = False) -> dict[str, Any]:
    """Enough detail to name columns, values and files, without every failing row."""
    if sql:  # a table in the database has no source-file column
        return {"result_format": "SUMMARY", "partial_unexpected_count": 5}
    return {"result_format": "SUMMARY", "partial_unexpected_count": 5, "unexpected_index_column_names": [SOURCE_COLUMN]}


# First pass: pass or fail only. GX then answers every row condition of a table from one bundled
# aggregate query; the SUMMARY format adds a query per expectation for its example rows (a full scan
# when no row breaks it). On 10M staged rows: 1.2 s of queries against 10 s.
PASS_OR_FAIL = {"result_format": "BOOLEAN_ONLY"}


def _validate(batch: Any, suite: Any, detail: dict[str, Any]) -> Any:
    """Validate pass-or-fail; only a failing suite runs again with ``detail`` to say what broke and where."""
    result = batch.validate(suite, result_format=PASS_OR_FAIL)
    if result.success:
        return result
    return batch.validate(suite, result_format=detail)


@dataclass(frozen=True)
class ValidationReport:
    """A stage's validation: the suite, the rows it saw, and GX's result (``describe_dict()`` form)."""

    suite: str
    rows: int
    result: dict[str, Any]

    @property
    def success(self) -> bool:
        return bool(self.result.get("success"))

    @property
    def statistics(self) -> dict[str, Any]:
        return dict(self.result.get("statistics") or {})

    def summary(self, result_uri: str | None) -> dict[str, Any]:
        """A compact record (for MLflow and XCom): statistics, the failed rules, where the full result is."""
        return {
            "success": self.success,
            "statistics": self.result.get("statistics"),
            "failures": describe_failures(self.result),
            "suite": self.suite,
            "rows": self.rows,
            "result_uri": result_uri,
        }

    def failure_message(self, result_uri: str | None, consequence: str) -> str:
        """What on-call reads: the suite, how many rules failed on how many rows, each rule, where to look."""
        stats = self.statistics
        lines = "\n  - ".join(describe_failures(self.result))
        return (
            f"GX suite {self.suite} failed {stats.get('unsuccessful_expectations')} of "
            f"{stats.get('evaluated_expectations')} expectations on {self.rows} rows:\n  - {lines}\n"
            f"Full result: {result_uri or '(not kept: no work root)'} (the task's 'GX validation result' link "
            f"shows it). {consequence}"
        )


def _context() -> Any:
    # GX logs every docs decorator it registers at INFO while it is imported (~200 lines a task):
    # quiet before the import; keep task logs for what matters.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # GX draws a tqdm "Calculating Metrics" bar on stderr per validation, which a task log keeps as
    # hundreds of carriage-return lines: off at its source, in the context's own setting.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def validate_frame(spec: ModelSpec, stage: Stage, frame: pd.DataFrame, gx_dir: Path = GX_DIR) -> ValidationReport:
    """Validate ``frame`` (every row of a stage, with ``source_file``) with the stage's suite.

    The training set and the scoring input get the derived features first, so their rules are checked
    like any other feature's; labels are checked in the form the model trains on.
    """
    frame = prepare(spec, stage, frame)
    context = _context()
    suite = build_suite(spec, stage, gx_dir)
    batch = (
        context.data_sources.add_pandas(name="nightshift")
        .add_dataframe_asset(name="frame")
        .add_batch_definition_whole_dataframe(name="whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = _validate(batch, suite, result_format())
    return ValidationReport(suite_name(spec, stage), len(frame), result.describe_dict())


def prepare(spec: ModelSpec, stage: Stage, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the suite of ``stage`` sees it: derived features added, labels as the model uses them."""
    from include.nightshift.datasets import target_values
    from include.nightshift.features import derive

    if stage in ("training_set", "scoring_input"):
        frame = derive(spec, frame)
    target = spec.target.name
    if stage in ("raw_labels", "training_set") and spec.target.type == "multiclass" and target in frame:
        frame = frame.assign(**{target: target_values(spec, frame[target].dropna()).reindex(frame.index)})
    return frame


# The output suite runs beside the key build on the same table (the scoring DAG); on a small machine
# PostgreSQL's parallel workers for both oversubscribe the cores. Measured on 2 cores, 10M staged rows:
# GX's import and three scans beside the key build took 12.2 s with parallel scans and 8.8 s with
# one backend each (the key build 7.9 and 6.4 s).
SERIAL_SCANS = {"max_parallel_workers_per_gather": "0"}


def with_session_settings(url: str, settings: dict[str, str]) -> str:
    """``url`` with server settings for its sessions (libpq ``options``), keeping any it has."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    given = u.query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    options = " ".join([given, *(f"-c {k}={v}" for k, v in settings.items())]).strip()
    return u.update_query_dict({"options": options}).render_as_string(hide_password=False)


def validate_table(
    spec: ModelSpec,
    stage: Stage,
    connection_string: str,
    schema: str,
    table: str,
    expected: dict[str, Any],
    gx_dir: Path = GX_DIR,
) -> ValidationReport:
    """Validate a table in PostgreSQL in the database (GX's SQL data source), e.g. the staged day.

    Args:
        connection_string: A SQLAlchemy URL (``postgresql+psycopg2://...``).
        expected: For ``scored_output``: the run's ``rows``, ``model_version`` and ``dag_run_id``.
    """
    context = _context()
    suite = build_suite(spec, stage, gx_dir, expected=expected)
    url = with_session_settings(connection_string, SERIAL_SCANS)
    batch = (
        context.data_sources.add_postgres(name="warehouse", connection_string=url)
        .add_table_asset(name="staged", table_name=table, schema_name=schema)
        .add_batch_definition_whole_table(name="whole")
        .get_batch()
    )
    result = _validate(batch, suite, result_format(sql=True))
    return ValidationReport(suite_name(spec, stage), int(expected["rows"]), result.describe_dict())
