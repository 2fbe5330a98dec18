"""Which failures are retried and which are final, for every Nightshift task (docs/runbook.md has the table).

- Bad data, bad config, a broken model contract (``FINAL_ERRORS``): ``AirflowFailException``, no retry.
- A service that does not answer (MLflow, PostgreSQL, S3): :class:`ServiceUnavailableError`, retried,
  its message naming the service and URL (never credentials) and what to check. The MLflow client's
  own HTTP retries are bounded (``MLFLOW_CLIENT_ENV`` in scripts/stack, the Dockerfile, compose), so a
  try against a dead server takes seconds, not minutes.
- Anything else: raised as it is, retried.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Iterator

S3_NETWORK_MARKERS = ("NETWORK_CONNECTION", "Couldn't connect", "Could not connect", "curlCode", "Timeout was reached")


@contextmanager
def final_on_bad_input() -> Iterator[None]:
    """Bad data and bad config fail the task at once (no retry); anything else may be retried."""
    from include.nightshift.errors import FINAL_ERRORS

    try:
        yield
    except FINAL_ERRORS as exc:
        raise AirflowFailException(str(exc)) from exc


def mlflow_unreachable(exc: BaseException) -> bool:
    """An MLflow client error caused by the network (refused, timed out, retries exhausted), not by MLflow."""
    import requests
    from mlflow.exceptions import MlflowException

    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, MlflowException) and isinstance(cause, requests.exceptions.RequestException)


def s3_unreachable(exc: BaseException) -> bool:
    """A pyarrow S3 error of the network (not a missing key or a denied request)."""
    return isinstance(exc, OSError) and "AWS Error" in str(exc) and any(m in str(exc) for m in S3_NETWORK_MARKERS)


@contextmanager
def services_answer(op: Any) -> Iterator[None]:
    """Turn 'the service did not answer' into a retryable error naming the service, its URL and what to do."""
    from include.nightshift.errors import ServiceUnavailableError

    try:
        yield
    except ServiceUnavailableError:
        raise
    except Exception as exc:
        if mlflow_unreachable(exc):
            url = op.mlflow_hook.tracking_uri
            todo = (
                f"Check that the MLflow tracking server answers at {url}/health and that the Airflow "
                f"connection {op.mlflow_conn_id!r} points at it."
            )
            raise ServiceUnavailableError("MLflow", url, exc.__cause__ or exc.__context__, todo) from exc
        if s3_unreachable(exc):
            url = s3_endpoint(op.aws_conn_id)
            todo = f"Check that the S3 endpoint answers and that the Airflow connection {op.aws_conn_id!r} names it."
            raise ServiceUnavailableError("S3", url, exc, todo) from exc
        raise


def s3_endpoint(aws_conn_id: str | None) -> str:
    """The S3 endpoint of a connection (its endpoint_url, or AWS's), without credentials."""
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
        return hook.conn_config.get_service_endpoint_url("s3") or f"AWS S3 ({hook.region_name or 'default region'})"
    except Exception:
        return "S3 (endpoint unknown)"


def warehouse_unreachable(conn_id: str, conn: Any, exc: Exception) -> Exception:
    """The retryable error for a warehouse connection that failed to open (``conn``: the Airflow connection)."""
    from include.nightshift.errors import ServiceUnavailableError

    url = f"postgresql://{conn.host}:{conn.port or 5432}/{conn.schema or ''}"
    todo = f"Check that PostgreSQL answers there (pg_isready) and that the Airflow connection {conn_id!r} is right."
    return ServiceUnavailableError("PostgreSQL", url, exc, todo)
