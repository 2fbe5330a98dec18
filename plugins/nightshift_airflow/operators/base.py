"""What every Nightshift operator shares: the model spec, the hooks, and mapping library errors to Airflow.

As in the Airflow providers (``AwsBaseOperator``, common-sql's ``BaseSQLOperator``), the base class
owns the connection ids (``<system>_conn_id``, default ``<system>_default``) and builds each hook once,
on first use, as a cached property; ``__init__`` only stores arguments. ``execute`` loads the spec
and calls :meth:`NightshiftOperator.run`, which calls one library function and pushes small facts.
"""

from __future__ import annotations

import re
from contextlib import closing, contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from nightshift_airflow.hooks import AWS_CONN_ID, MLFLOW_CONN_ID, POSTGRES_CONN_ID
from nightshift_airflow.operators.failures import final_on_bad_input, services_answer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import date

    from airflow.sdk import Context
    from mlflow import MlflowClient
    from psycopg2.extensions import connection

    from include.nightshift.lineage import Lineage
    from include.nightshift.sources import DataPaths
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage
    from nightshift_airflow.hooks import MlflowHook, WarehouseHook


def peak_rss_mb() -> int:
    """The peak resident set size of this process so far, in MB (Linux reports kilobytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak / 1024 / 1024) if sys.platform == "darwin" else int(peak / 1024)


def run_slug(run_id: str) -> str:
    """A DAG run id made safe for a path segment."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def run_date(context: Context) -> date:
    """The date a run is for: its logical date, or when it was triggered if it has none."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.date()


class DataOperator:
    """A mixin for operators that read the model's data: where it lands and where runs keep their files.

    Args:
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI of the runs' files, landed CSV and SQL data among them (templated).
    """

    landing_root: str
    work_root: str | None

    @property
    def paths(self) -> DataPaths:
        from include.nightshift.sources import DataPaths

        return DataPaths(self.landing_root, self.work_root or "")


class NightshiftOperator(BaseOperator):
    """Base class: holds the model name and the connection ids; subclasses implement ``run``.

    Args:
        model: The spec name under ``include/models/`` (templated).
        mlflow_conn_id: The MLflow tracking server and registry.
        postgres_conn_id: The warehouse.
        aws_conn_id: Credentials for ``s3://`` URIs (none: the default AWS chain).
    """

    template_fields: tuple[str, ...] = ("model",)
    ui_color = "#e8e4f8"

    def __init__(
        self,
        *,
        model: str,
        mlflow_conn_id: str = MLFLOW_CONN_ID,
        postgres_conn_id: str = POSTGRES_CONN_ID,
        aws_conn_id: str | None = AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.mlflow_conn_id = mlflow_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def spec(self) -> ModelSpec:
        from include.nightshift.spec import load_model

        return load_model(self.model)

    @cached_property
    def mlflow_hook(self) -> MlflowHook:
        from nightshift_airflow.hooks import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @cached_property
    def mlflow(self) -> MlflowClient:
        return self.mlflow_hook.get_conn()

    @cached_property
    def warehouse_hook(self) -> WarehouseHook:
        from nightshift_airflow.hooks import WarehouseHook

        return WarehouseHook(postgres_conn_id=self.postgres_conn_id)

    @contextmanager
    def warehouse(self) -> Iterator[connection]:
        """A new psycopg2 connection to the warehouse, closed on exit (retryable error when it does not answer)."""
        import psycopg2

        from nightshift_airflow.operators.failures import warehouse_unreachable

        try:
            opened = self.warehouse_hook.get_conn()
        except psycopg2.OperationalError as exc:
            airflow_conn = self.warehouse_hook.get_connection(self.postgres_conn_id)
            raise warehouse_unreachable(self.postgres_conn_id, airflow_conn, exc) from exc
        with closing(opened) as conn:
            yield conn

    @cached_property
    def storage(self) -> Storage:
        from nightshift_airflow.hooks import storage_from_connection

        return storage_from_connection(self.aws_conn_id)

    def contract_spec(self, mlflow_run_id: str | None) -> ModelSpec:
        """The spec as the model version trained in ``mlflow_run_id`` sees it (its contract applied)."""
        from include.nightshift.contract import load_contract

        return load_contract(self.mlflow, mlflow_run_id, self.spec).apply(self.spec)

    def effective_spec(self) -> ModelSpec:
        """The spec ``run`` works with: the file's, or (tasks working with a model version) the version's."""
        return self.spec

    def execute(self, context: Context) -> Any:
        try:
            with final_on_bad_input(), services_answer(self):
                return self.run(context, self.effective_spec())
        finally:
            # bench/nightly.py reads this line from the task logs (the task's peak, not the worker's).
            self.log.info("peak RSS of this task: %d MB", peak_rss_mb())

    # -- lineage: what ``run`` read and wrote, reported through the OpenLineage provider ---------------

    @cached_property
    def lineage(self) -> Lineage:
        from include.nightshift.lineage import Lineage

        return Lineage()

    def read_file(self, uri: str, **facets: Any) -> None:
        from include.nightshift.lineage import file_dataset

        self.lineage.read(file_dataset(uri), **facets)

    def read_model_version(self, model: str, version: int | str) -> None:
        from include.nightshift.lineage import model_version_dataset

        self.lineage.read(model_version_dataset(self.mlflow_hook.tracking_uri, model, version))

    def table(self, schema: str, table: str) -> tuple[str, str]:
        """The warehouse table's OpenLineage (namespace, name): host, port and database, no credentials."""
        from include.nightshift.lineage import table_dataset

        return table_dataset(self.warehouse_hook.get_uri(), schema, table)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The OpenLineage provider's hook: the inputs and outputs ``run`` recorded in :attr:`lineage`."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self.lineage.datasets()
        return OperatorLineage(inputs=inputs, outputs=outputs)

    def run(self, context: Context, spec: ModelSpec) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError
