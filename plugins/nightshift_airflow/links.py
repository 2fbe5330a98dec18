"""Operator extra links: buttons on a task in the Airflow UI that open what the task produced.

Each operator pushes the full URL to XCom under the link's key while it runs; the link reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class _XComUrlLink(BaseOperatorLink):
    url_key: ClassVar[str]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(ti_key=ti_key, key=self.url_key) or ""


class MlflowRunLink(_XComUrlLink):
    name = "MLflow run"
    url_key = "mlflow_run_url"


class MlflowModelVersionLink(_XComUrlLink):
    name = "MLflow model version"
    url_key = "mlflow_model_version_url"


class DriftReportLink(_XComUrlLink):
    name = "Drift report"
    url_key = "drift_report_url"


class GXValidationResultLink(_XComUrlLink):
    """The task's Great Expectations result, rendered by the Nightshift plugin (``ui.validation_page``)."""

    name = "GX validation result"
    url_key = "gx_result_url"


# Where the plugin mounts the Nightshift app (``ui.app``) on the API server.
URL_PREFIX = "/nightshift"


def airflow_base_url() -> str:
    """The Airflow UI's address as configured (``[api] base_url``), without a trailing slash."""
    from airflow.sdk import conf

    return conf.get("api", "base_url", fallback="").rstrip("/")


def validation_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The absolute address of a task's GX validation result page on the API server."""
    import urllib.parse

    query = urllib.parse.urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index})
    return f"{airflow_base_url()}{URL_PREFIX}/validation?{query}"
