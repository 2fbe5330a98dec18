"""Hooks: the MLflow server (no provider exists for it), the warehouse, and object storage.

Connection ids follow ``<system>_conn_id`` with the default ``<system>_default``, declared here once.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from psycopg2.extensions import connection

    from include.nightshift.storage import Storage

MLFLOW_CONN_ID = "mlflow_default"
POSTGRES_CONN_ID = "postgres_default"
AWS_CONN_ID = "aws_default"


class MlflowHook(BaseHook):
    """An MLflow tracking server and registry, from an Airflow connection.

    MLflow has no Airflow provider, so this small hook turns a connection (type ``http``: host,
    port, schema ``http``/``https``, optional login/password for basic auth, ``extra.ui_url`` for
    links) into an ``MlflowClient``.

    Args:
        mlflow_conn_id: The connection id.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = MLFLOW_CONN_ID
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
        """A client of the tracking server and registry, authenticated as the connection's login."""
        from include.nightshift.tracking import mlflow_client

        c = self._conn
        return mlflow_client(self.tracking_uri, c.login or None, c.password or None)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: int | str) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"


class WarehouseHook(PostgresHook):
    """The warehouse: Airflow's PostgresHook, opening psycopg2 connections.

    ``PostgresHook.get_conn()`` opens psycopg 3 connections when SQLAlchemy 2 is installed (as it is
    with Airflow 3); the scoring library streams ``COPY`` and composes SQL with psycopg2. The hook
    still builds the connection arguments (extras, IAM tokens) and the SQLAlchemy URL itself.
    """

    hook_name = "Nightshift warehouse (PostgreSQL, psycopg2)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("sqlalchemy_scheme", "postgresql+psycopg2")
        super().__init__(*args, **kwargs)

    def _create_connection(self, conn_args: dict[str, Any]) -> connection:
        import psycopg2

        conn_args.pop("row_factory", None)  # psycopg 3 only
        return psycopg2.connect(**conn_args)


def storage_from_connection(aws_conn_id: str | None = AWS_CONN_ID) -> Storage:
    """A ``Storage`` for ``file://`` URIs, and for ``s3://`` with the credentials of ``aws_conn_id``.

    The Amazon provider's ``AwsBaseHook`` resolves them (keys, session tokens, profiles, assumed
    roles, the default AWS chain when the connection does not exist), only when an ``s3://`` URI is
    first used; the streaming itself stays on pyarrow's S3 filesystem.
    """
    from include.nightshift.storage import Storage

    if not aws_conn_id:
        return Storage()
    return Storage(s3_credentials=lambda: s3_options(aws_conn_id))


def s3_options(aws_conn_id: str) -> dict[str, Any]:
    """Keyword arguments for ``pyarrow.fs.S3FileSystem`` from an Airflow AWS connection."""
    from urllib.parse import urlparse

    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    options: dict[str, Any] = {}
    try:
        credentials = hook.get_credentials()
    except AttributeError:  # nothing in the connection nor the default chain: let pyarrow look itself
        credentials = None
    if credentials is not None:
        options.update(
            access_key=credentials.access_key, secret_key=credentials.secret_key, session_token=credentials.token
        )
    region = hook.region_name or hook.get_session().region_name
    if region:
        options["region"] = region
    endpoint = hook.conn_config.get_service_endpoint_url("s3")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    return {k: v for k, v in options.items() if v is not None}


def source_connection(conn_id: str) -> Any:
    """A DB-API connection to a SQL source, from its Airflow connection through the provider's own hook.

    Any connection type whose provider hook is a ``DbApiHook`` works (PostgreSQL, MySQL, Snowflake, ...).
    """
    hook = BaseHook.get_connection(conn_id).get_hook()
    if not hasattr(hook, "get_conn"):
        raise TypeError(f"connection {conn_id!r} does not give a database connection (hook {type(hook).__name__})")
    return hook.get_conn()
