"""Data validation with the Great Expectations provider.

``GXValidateBatchOperator`` runs the suite and pushes the full GX result to XCom; this subclass
supplies the frame (read at run time, never at parse time), the suite derived from the spec, and
turns a failure into a message that names the suite, the rules, columns, observed values and files.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException
from great_expectations_provider.operators.validate_batch import GXValidateBatchOperator

from nightshift_airflow.links import GXValidationResultLink, validation_url
from nightshift_airflow.operators.base import final_on_bad_input, run_slug

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import Context
    from great_expectations.data_context import AbstractDataContext

    from include.nightshift.spec import ModelSpec


class ValidateDataOperator(GXValidateBatchOperator):
    """Validate one stage of a model's data with its GX suite.

    Args:
        model: The spec name (templated).
        stage: ``raw_features``, ``raw_labels``, ``training_set``, ``scoring_input`` or ``scored_output``.
        resolved: For raw stages, the output of ``ResolveTrainingRunOperator``; for scoring stages,
            of ``ResolveScoringRunOperator`` (templated).
        landing_root: For raw stages, the landing root URI (templated).
        training_set: For ``training_set``, the output of ``BuildTrainingSetOperator`` (templated).
        scored: For ``scored_output``, the output of ``AssembleScoresOperator`` (templated).
        work_root: Where the full GX result is written as JSON (templated).
        aws_conn_id: Credentials for ``s3://`` URIs.
        postgres_conn_id: The warehouse, for ``scored_output``.
    """

    template_fields = ("model", "resolved", "landing_root", "training_set", "scored", "work_root")
    ui_color = "#ffe8cc"
    operator_extra_links = (GXValidationResultLink(),)

    def __init__(
        self,
        *,
        model: str,
        stage: str,
        resolved: Any = None,
        landing_root: str | None = None,
        training_set: Any = None,
        scored: Any = None,
        work_root: str | None = None,
        aws_conn_id: str | None = "aws_default",
        postgres_conn_id: str = "postgres_default",
        **kwargs: Any,
    ) -> None:
        from include.nightshift.validation import STAGES

        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {STAGES}")
        super().__init__(
            configure_batch_definition=_whole_frame,
            configure_expectations=self._suite,
            context_type="ephemeral",
            **kwargs,
        )
        self.model = model
        self.stage = stage
        self.resolved = resolved
        self.landing_root = landing_root
        self.training_set = training_set
        self.scored = scored
        self.work_root = work_root
        self.aws_conn_id = aws_conn_id
        self.postgres_conn_id = postgres_conn_id

    def _spec(self) -> ModelSpec:
        from include.nightshift.spec import load_model

        return load_model(self.model)

    def _suite(self, gx_context: AbstractDataContext) -> Any:
        from include.nightshift.validation import build_suite

        expected = None
        if self.stage == "scored_output":
            expected = {
                "rows": self.scored["scored_rows"],
                "model_version": self.resolved["model_version"],
                "dag_run_id": self.resolved["dag_run_id"],
            }
        return gx_context.suites.add(build_suite(self._spec(), self.stage, expected=expected))

    def _frame(self, spec: ModelSpec) -> pd.DataFrame:
        import pandas as pd

        from include.nightshift import datasets, validation
        from nightshift_airflow.hooks import storage_from_connection

        storage = storage_from_connection(self.aws_conn_id)
        if self.stage == "scoring_input":
            from datetime import date

            from include.nightshift.scoring import read_sample

            day = date.fromisoformat(self.resolved["score_date"])
            return read_sample(storage, spec, self.resolved["input_uri"], day, spec.scoring.validation_sample_rows)
        if self.stage == "training_set":
            parts = []
            for key in ("train_uri", "holdout_uri"):
                df = storage.read_parquet(self.training_set[key])
                df[validation.SOURCE_COLUMN] = self.training_set[key]
                parts.append(df)
            return pd.concat(parts, ignore_index=True)
        window = datasets.Window.from_dict(self.resolved["window"])
        kind = "features" if self.stage == "raw_features" else "labels"
        uris = datasets.partition_uris(spec, self.landing_root, window.days, kind)
        datasets.require_partitions(storage, uris, kind)
        return validation.read_stage(storage, spec, self.stage, uris)  # type: ignore[arg-type]

    def execute(self, context: Context) -> dict[str, Any]:
        import logging

        from great_expectations_provider.common.errors import GXValidationFailed

        # GX logs every docs decorator it registers at INFO; keep task logs for what matters.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)

        from include.nightshift import validation

        # Bound again: Airflow runs a rendered copy of the task, and the method bound in __init__
        # belongs to the unrendered original.
        self.configure_expectations = self._suite  # type: ignore[assignment]
        with final_on_bad_input():
            spec = self._spec()
            if self.stage == "scored_output":
                # Validated in the database, on the staged table that will become the partition.
                self.configure_batch_definition = self._staged_table  # type: ignore[assignment]
                self.batch_parameters = {}
                rows = int(self.scored["scored_rows"])
            else:
                frame = self._frame(spec)
                self.batch_parameters = {"dataframe": frame}
                rows = len(frame)
        self.result_format = validation.result_format(sql=self.stage == "scored_output")  # type: ignore[assignment]
        name = validation.suite_name(spec, self.stage)
        try:
            super().execute(context)
            failed = None
        except GXValidationFailed as exc:
            failed = exc
        result = context["ti"].xcom_pull(task_ids=self.task_id, key="return_value") or {}
        where = self._save_result(context, spec, name, result)
        summary = validation.summarize(result)
        summary.update({"suite": name, "rows": rows, "result_uri": where})
        context["ti"].xcom_push(key="summary", value=summary)
        ti = context["ti"]
        ti.xcom_push(
            key=GXValidationResultLink.url_key,
            value=validation_url(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1)),
        )
        if failed is not None:
            stats = result.get("statistics") or {}
            lines = "\n  - ".join(summary["failures"])
            raise AirflowFailException(
                f"GX suite {name} failed {stats.get('unsuccessful_expectations')} of "
                f"{stats.get('evaluated_expectations')} expectations on {rows} rows:\n  - {lines}\n"
                f"Full result: {where} (and XCom 'return_value' of task {self.task_id}). {self._consequence()}"
            ) from failed
        self.log.info(
            "GX suite %s passed: %s expectations on %d rows",
            name,
            (result.get("statistics") or {}).get("evaluated_expectations"),
            rows,
        )
        return summary

    def _consequence(self) -> str:
        if self.stage in ("raw_features", "raw_labels", "training_set"):
            return "Nothing was trained or registered; fix or re-land the named files, then clear this task."
        day = self.resolved["score_date"]
        if self.stage == "scoring_input":
            self._release()  # nothing of this run will be written: free the date for the next run
            return (
                f"Nothing was scored; the published scores of {day} are unchanged. "
                "Fix or re-land the day's file, then re-run the date."
            )
        self._release()
        return (
            f"The loaded rows were discarded and not published; the scores of {day} are unchanged. "
            "Check the model version and the input, then re-run the date."
        )

    def _release(self) -> None:
        from datetime import date

        from include.nightshift import warehouse
        from nightshift_airflow.hooks import warehouse_connection

        tables = warehouse.Tables.for_spec(self._spec())
        conn = warehouse_connection(self.postgres_conn_id)
        try:
            warehouse.release(
                conn, tables, date.fromisoformat(self.resolved["score_date"]), self.resolved["dag_run_id"]
            )
        finally:
            conn.close()

    def _staged_table(self, gx_context: AbstractDataContext) -> Any:
        """A GX PostgreSQL data source whose batch is the whole staged table."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        url = PostgresHook(postgres_conn_id=self.postgres_conn_id).get_uri()
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
        source = gx_context.data_sources.add_or_update_postgres(name="warehouse", connection_string=url)
        asset = source.add_table_asset(
            name="staged", table_name=self.scored["staged_table"], schema_name=self.scored["staging_schema"]
        )
        return asset.add_batch_definition_whole_table(name="whole")

    def _save_result(self, context: Context, spec: ModelSpec, name: str, result: dict[str, Any]) -> str | None:
        if not self.work_root:
            return None
        from include.nightshift.storage import join_uri
        from nightshift_airflow.hooks import storage_from_connection

        uri = join_uri(self.work_root, spec.name, "validation", run_slug(context["run_id"]), f"{name}.json")
        storage_from_connection(self.aws_conn_id).write_bytes(json.dumps(result, indent=1, default=str).encode(), uri)
        return uri


def _whole_frame(gx_context: AbstractDataContext) -> Any:
    """A pandas data source whose batch is the whole frame passed as a batch parameter."""
    source = gx_context.data_sources.add_or_update_pandas(name="nightshift")
    asset = source.add_dataframe_asset(name="frame")
    return asset.add_batch_definition_whole_dataframe(name="whole")
