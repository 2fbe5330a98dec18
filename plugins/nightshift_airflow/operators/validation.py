"""Data validation operators, one per input they validate (as the GX provider splits its operators).

Each builds the frame or names the table, calls GX Core through :mod:`include.nightshift.validation`
with the result in hand, keeps the full result as JSON under the work root (the task's *GX
validation result* link shows it), pushes a summary to XCom key ``summary``, and fails with a message
that names the suite, the rules, the columns, the observed values and the files.
"""

from __future__ import annotations

import json
from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from nightshift_airflow.links import GXValidationResultLink, validation_url
from nightshift_airflow.operators.base import DataOperator, NightshiftOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.spec import ModelSpec
    from include.nightshift.validation import Stage, ValidationReport


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", None)
    return -1 if index is None else int(index)


class _ValidateOperator(NightshiftOperator):
    """What the validation operators share: run the suite, keep the result, report, fail clearly.

    Args:
        work_root: Where the full GX result is written as JSON (templated).
    """

    ui_color = "#ffe8cc"
    operator_extra_links = (GXValidationResultLink(),)

    def __init__(self, *, stage: Stage, work_root: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage: Stage = stage
        self.work_root = work_root

    def validate(self, spec: ModelSpec) -> ValidationReport:  # pragma: no cover - abstract
        raise NotImplementedError

    def consequence(self) -> str:
        """What a failure means for the data (the last sentence of the failure message)."""
        return "Nothing was trained or registered; fix or re-land the named files, then clear this task."

    def on_failure(self, spec: ModelSpec) -> None:
        """Called before the task fails on a failed suite (scoring gives its date back here)."""

    def stop_if_superseded(self, spec: ModelSpec) -> None:
        """Called when the suite failed or could not run, before :meth:`on_failure`: raise to end otherwise."""

    def checked(self, spec: ModelSpec) -> list[tuple[str, str]]:  # pragma: no cover - abstract
        """The OpenLineage datasets the suite checked (its result rides on them as a data-quality facet)."""
        raise NotImplementedError

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        try:
            report = self.validate(spec)
        except Exception:
            self.stop_if_superseded(spec)
            raise
        from include.nightshift.lineage import quality_assertions

        facet = quality_assertions(report.result)
        for dataset in self.checked(spec):
            self.lineage.read(dataset, dataQualityAssertions=facet)
        where = self._save(context, spec, report)
        summary = report.summary(where)
        ti = context["ti"]
        ti.xcom_push(key="summary", value=summary)
        ti.xcom_push(
            key=GXValidationResultLink.url_key,
            value=validation_url(ti.dag_id, ti.run_id, ti.task_id, _map_index(ti)),
        )
        if not report.success:
            self.stop_if_superseded(spec)
            self.on_failure(spec)
            raise AirflowFailException(report.failure_message(where, self.consequence()))
        self.log.info(
            "GX suite %s passed: %s expectations on %d rows",
            report.suite,
            report.statistics.get("evaluated_expectations"),
            report.rows,
        )
        return summary

    def _save(self, context: Context, spec: ModelSpec, report: ValidationReport) -> str | None:
        if not self.work_root:
            return None
        from include.nightshift.validation import TaskKey, result_uri

        ti = context["ti"]
        key = TaskKey(ti.dag_id, ti.run_id, ti.task_id, _map_index(ti))
        # The result page derives this same location from the task's identity (never from the XCom).
        uri = result_uri(self.work_root, key)
        return self.storage.write_bytes(json.dumps(report.result, indent=1, default=str).encode(), uri)


class ValidateLandingOperator(DataOperator, _ValidateOperator):
    """Validate the landing partitions of a training window: ``raw_features`` or ``raw_labels``.

    Args:
        stage: ``raw_features`` or ``raw_labels``.
        resolved: The output of ``ResolveTrainingRunOperator`` (templated).
        landing_root: The landing root URI (templated).
    """

    template_fields = ("model", "resolved", "landing_root", "work_root")

    def __init__(self, *, stage: Stage, resolved: Any, landing_root: str, work_root: str, **kwargs: Any) -> None:
        if stage not in ("raw_features", "raw_labels"):
            raise ValueError(f"stage {stage!r} is not one of raw_features, raw_labels")
        super().__init__(stage=stage, work_root=work_root, **kwargs)
        self.resolved = resolved
        self.landing_root = landing_root
        self._uris: list[str] = []

    def validate(self, spec: ModelSpec) -> ValidationReport:
        from include.nightshift import datasets, validation

        window = datasets.Window.from_dict(self.resolved["window"])
        kind = "features" if self.stage == "raw_features" else "labels"
        uris = datasets.partition_uris(spec, self.paths, window.days, kind)
        datasets.require_partitions(self.storage, uris, kind)
        self._uris = list(uris.values())
        frame = validation.read_stage(self.storage, spec, self.stage, uris)
        return validation.validate_frame(spec, self.stage, frame)

    def checked(self, spec: ModelSpec) -> list[tuple[str, str]]:
        from include.nightshift.lineage import file_dataset

        return [file_dataset(uri) for uri in self._uris]


class ValidateTrainingSetOperator(_ValidateOperator):
    """Validate the joined, split training set (both splits, with the file each row came from).

    Args:
        training_set: The output of ``BuildTrainingSetOperator`` (templated).
    """

    template_fields = ("model", "training_set", "work_root")

    def __init__(self, *, training_set: Any, **kwargs: Any) -> None:
        super().__init__(stage="training_set", **kwargs)
        self.training_set = training_set

    def validate(self, spec: ModelSpec) -> ValidationReport:
        import pandas as pd

        from include.nightshift import validation

        parts = []
        for key in ("train_uri", "holdout_uri"):
            df = self.storage.read_parquet(self.training_set[key])
            df[validation.SOURCE_COLUMN] = self.training_set[key]
            parts.append(df)
        return validation.validate_frame(spec, self.stage, pd.concat(parts, ignore_index=True))

    def checked(self, spec: ModelSpec) -> list[tuple[str, str]]:
        from include.nightshift.lineage import file_dataset

        return [file_dataset(self.training_set[key]) for key in ("train_uri", "holdout_uri")]


class _ScoringValidation(_ValidateOperator):
    """A validation inside a scoring run: a failure gives the run's date back (its lease), explicitly.

    Args:
        resolved: XCom ``run`` of ``ResolveScoringRunOperator`` (templated).
    """

    def __init__(self, *, stage: Stage, resolved: Any, **kwargs: Any) -> None:
        super().__init__(stage=stage, **kwargs)
        self.resolved = resolved

    @property
    def day(self) -> date:
        return date.fromisoformat(self.resolved["score_date"])

    def effective_spec(self) -> ModelSpec:
        """The pinned version's view of the spec: its contract decides the columns and outputs."""
        return self.contract_spec(str(self.resolved["mlflow_run_id"]))

    def stop_if_superseded(self, spec: ModelSpec) -> None:
        """Skip when the task beside this one gave the date back first (the key build, the shards).

        The output suite reads the staged table while assemble builds its key; when assemble fails
        (duplicate keys, too many quarantined rows) it gives the date back and drops the table, and this
        suite, which then fails on a missing table, has nothing to add.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        from include.nightshift import warehouse

        tables = warehouse.Tables.for_spec(spec)
        with self.warehouse() as conn:
            if warehouse.given_back(conn, tables, self.day):
                raise AirflowSkipException(warehouse.given_back_message(tables, self.day, self.resolved["dag_run_id"]))

    def on_failure(self, spec: ModelSpec) -> None:
        from include.nightshift import scoring, warehouse

        with self.warehouse() as conn:
            try:
                lease = scoring.ScoringRun.from_dict(self.resolved).lease(conn, warehouse.Tables.for_spec(spec))
            except warehouse.ScoreDateBusyError:
                return  # another run holds the date now: nothing of ours to give back
            lease.release()


class ValidateScoringInputOperator(_ScoringValidation):
    """Validate the day to score (all of it, or an even sample of ``scoring.validation_sample_rows``)."""

    template_fields = ("model", "resolved", "work_root")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(stage="scoring_input", **kwargs)

    def consequence(self) -> str:
        return (
            f"No scores were published; the published scores of {self.day} are unchanged (the shards that "
            "score beside this suite stop and discard their rows). Fix or re-land the day's file, then re-run "
            "the date."
        )

    def validate(self, spec: ModelSpec) -> ValidationReport:
        from include.nightshift import scoring, validation

        rows = spec.scoring.validation_sample_rows
        frame = scoring.read_sample(self.storage, spec, self.resolved["input_uri"], self.day, rows)
        return validation.validate_frame(spec, self.stage, frame)

    def checked(self, spec: ModelSpec) -> list[tuple[str, str]]:
        from include.nightshift.lineage import file_dataset

        return [file_dataset(self.resolved["input_uri"])]


class ValidateScoredOutputOperator(_ScoringValidation):
    """Validate the day's staged rows in PostgreSQL, in the database, before they are published.

    It runs beside ``assemble``, which builds the staged table's key under a lock that lets it read.

    Args:
        shards: The outputs of the mapped ``ScoreShardOperator`` (templated): the rows to expect.
    """

    template_fields = ("model", "resolved", "shards", "work_root")

    def __init__(self, *, shards: Any, **kwargs: Any) -> None:
        super().__init__(stage="scored_output", **kwargs)
        self.shards = shards

    def consequence(self) -> str:
        return (
            f"The loaded rows were discarded and not published; the scores of {self.day} are unchanged. "
            "Check the model version and the input, then re-run the date."
        )

    def _staged(self, spec: ModelSpec) -> tuple[str, str]:
        from include.nightshift import scoring, warehouse

        tables = warehouse.Tables.for_spec(spec)
        return tables.staging_schema, warehouse.scores_table(
            tables, scoring.ScoringRun.from_dict(self.resolved).constants()
        )

    def validate(self, spec: ModelSpec) -> ValidationReport:
        from include.nightshift import scoring, validation

        # A slice reads every mapped result in one request (iterating asks for one index past the end).
        scored = sum(scoring.ShardResult.from_dict(r).scored_rows for r in self.shards[:])
        expected = {
            "rows": scored,
            "model_version": self.resolved["model_version"],
            "dag_run_id": self.resolved["dag_run_id"],
        }
        url = self.warehouse_hook.get_uri()
        schema, table = self._staged(spec)
        return validation.validate_table(spec, self.stage, url, schema, table, expected)

    def checked(self, spec: ModelSpec) -> list[tuple[str, str]]:
        return [self.table(*self._staged(spec))]
