"""Hooks for systems without an Airflow provider (MLflow), and storage built from connections."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from include.nightshift.storage import Storage


class MlflowHook(BaseHook):
    """An MLflow tracking server and registry, from an Airflow connection.

    MLflow has no Airflow provider, so this small hook turns a connection (type ``http``: host,
    port, optional login/password for basic auth, ``extra.ui_url`` for links) into an
    ``MlflowClient``.

    Args:
        mlflow_conn_id: The connection id.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def _conn(self) -> Any:
        return self.get_connection(self.mlflow_conn_id)

    @property
    def tracking_uri(self) -> str:
        c = self._conn
        scheme = c.schema or "http"
        port = f":{c.port}" if c.port else ""
        return f"{scheme}://{c.host}{port}"

    @property
    def ui_url(self) -> str:
        return (self._conn.extra_dejson.get("ui_url") or self.tracking_uri).rstrip("/")

    def get_conn(self) -> MlflowClient:
        import os

        from mlflow import MlflowClient

        c = self._conn
        if c.login:
            # MLflow's client reads basic-auth credentials only from the environment.
            os.environ["MLFLOW_TRACKING_USERNAME"] = c.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = c.password or ""
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"


def storage_from_connection(aws_conn_id: str | None) -> Storage:
    """A ``Storage`` for ``file://`` URIs, and for ``s3://`` with the credentials of ``aws_conn_id``."""
    from include.nightshift.storage import Storage

    if not aws_conn_id:
        return Storage()
    try:
        conn = BaseHook.get_connection(aws_conn_id)
    except AirflowNotFoundException:  # no such connection: the default AWS credential chain
        return Storage()
    extra = conn.extra_dejson
    options: dict[str, Any] = {}
    if conn.login:
        options["access_key"] = conn.login
        options["secret_key"] = conn.password
    endpoint = extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}).get("endpoint_url"))
    if endpoint:
        options["endpoint_override"] = endpoint
        options["scheme"] = "https" if endpoint.startswith("https") else "http"
    if extra.get("region_name"):
        options["region"] = extra["region_name"]
    return Storage(s3_options=options)


def warehouse_connection(postgres_conn_id: str = "postgres_default") -> Any:
    """A psycopg2 connection to the warehouse described by an Airflow Postgres connection.

    ``PostgresHook.get_conn()`` returns a psycopg 3 connection when SQLAlchemy 2 is installed (as it
    is with Airflow 3); the scoring library is written against psycopg2 (``psycopg2.sql``,
    ``copy_expert`` streaming), so the hook resolves the connection and psycopg2 opens it.
    """
    import psycopg2
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=postgres_conn_id)
    c = hook.connection
    args: dict[str, Any] = {
        "host": c.host,
        "user": c.login,
        "password": c.password,
        "dbname": hook.database or c.schema,
        "port": c.port,
    }
    args.update({k: v for k, v in c.extra_dejson.items() if k not in hook.ignored_extra_options and k != "cursor"})
    return psycopg2.connect(**{k: v for k, v in args.items() if v not in (None, "")})
