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
        stage: ``raw_features``, ``raw_labels`` or ``training_set``.
        resolved: For raw stages, the output of ``ResolveTrainingRunOperator`` (templated).
        landing_root: For raw stages, the landing root URI (templated).
        training_set: For ``training_set``, the output of ``BuildTrainingSetOperator`` (templated).
        work_root: Where the full GX result is written as JSON (templated).
        aws_conn_id: Credentials for ``s3://`` URIs.
    """

    template_fields = ("model", "resolved", "landing_root", "training_set", "work_root")
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        model: str,
        stage: str,
        resolved: Any = None,
        landing_root: str | None = None,
        training_set: Any = None,
        work_root: str | None = None,
        aws_conn_id: str | None = "aws_default",
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
        self.work_root = work_root
        self.aws_conn_id = aws_conn_id

    def _spec(self) -> ModelSpec:
        from include.nightshift.spec import load_model

        return load_model(self.model)

    def _suite(self, gx_context: AbstractDataContext) -> Any:
        from include.nightshift.validation import build_suite

        return gx_context.suites.add(build_suite(self._spec(), self.stage))

    def _frame(self, spec: ModelSpec) -> pd.DataFrame:
        import pandas as pd

        from include.nightshift import datasets, validation
        from nightshift_airflow.hooks import storage_from_connection

        storage = storage_from_connection(self.aws_conn_id)
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

        with final_on_bad_input():
            spec = self._spec()
            frame = self._frame(spec)
        self.result_format = validation.result_format()  # type: ignore[assignment]
        self.batch_parameters = {"dataframe": frame}
        name = validation.suite_name(spec, self.stage)
        try:
            super().execute(context)
            failed = None
        except GXValidationFailed as exc:
            failed = exc
        result = context["ti"].xcom_pull(task_ids=self.task_id, key="return_value") or {}
        where = self._save_result(context, spec, name, result)
        summary = validation.summarize(result)
        summary.update({"suite": name, "rows": len(frame), "result_uri": where})
        context["ti"].xcom_push(key="summary", value=summary)
        if failed is not None:
            stats = result.get("statistics") or {}
            lines = "\n  - ".join(summary["failures"])
            raise AirflowFailException(
                f"GX suite {name} failed {stats.get('unsuccessful_expectations')} of "
                f"{stats.get('evaluated_expectations')} expectations on {len(frame)} rows:\n  - {lines}\n"
                f"Full result: {where} (and XCom 'return_value' of task {self.task_id}). "
                f"Nothing was trained or registered; fix or re-land the named files, then clear this task."
            ) from failed
        self.log.info(
            "GX suite %s passed: %s expectations on %d rows",
            name,
            (result.get("statistics") or {}).get("evaluated_expectations"),
            len(frame),
        )
        return summary

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
