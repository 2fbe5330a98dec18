"""MLflow clients with credentials, without putting them in the environment.

MLflow's client reads basic-auth credentials only from the environment (``MLFLOW_TRACKING_USERNAME``
/ ``_PASSWORD``) or ``~/.mlflow/credentials``; the fluent API (``mlflow.start_run``,
``mlflow.sklearn.load_model``) and the artifact repositories read them on every request. Writing them
into ``os.environ`` would leave them in every later child process and, in the long-lived API server,
in the process of every request. Instead, :func:`mlflow_client` registers the credentials with a
request-header provider (MLflow's plugin interface for headers; registered in this process because we
ship no installed package with entry points), which adds ``Authorization`` to MLflow's requests (to
the tracking server, which also proxies the artifacts). No credentials go into the tracking URI:
MLflow prints and logs that URI.
"""

from __future__ import annotations

import base64
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mlflow import MlflowClient

_LOCK = threading.Lock()
# tracking server netloc -> the value of its Authorization header, for this process's MLflow calls.
_AUTH: dict[str, str] = {}
_REGISTERED: list[bool] = []


def _register_provider() -> None:
    from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    class _BasicAuth(RequestHeaderProvider):
        """Adds the registered credentials' ``Authorization`` header to MLflow's requests.

        A header provider is not told the request's URL, so it only answers while exactly one tracking
        server has credentials registered in this process (the normal case: one MLflow per platform).
        """

        def in_context(self) -> bool:
            return len(_AUTH) == 1

        def request_headers(self) -> dict[str, str]:
            return {"Authorization": next(iter(_AUTH.values()))}

    _request_header_provider_registry.register(_BasicAuth)


def set_credentials(tracking_uri: str, username: str | None, password: str | None) -> None:
    """Authenticate this process's MLflow requests to ``tracking_uri`` (no credentials: forget them)."""
    netloc = urlsplit(tracking_uri).netloc
    with _LOCK:
        if not username:
            _AUTH.pop(netloc, None)
            return
        if not _REGISTERED:
            _register_provider()
            _REGISTERED.append(True)
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        _AUTH[netloc] = f"Basic {token}"


def mlflow_client(tracking_uri: str, username: str | None = None, password: str | None = None) -> MlflowClient:
    """A client of the tracking server and registry at ``tracking_uri``, authenticated when a login is given.

    The fluent API (``mlflow.set_tracking_uri(client.tracking_uri)`` then ``mlflow.start_run`` ...) uses
    the same credentials.
    """
    from mlflow import MlflowClient

    set_credentials(tracking_uri, username, password)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_login(tracking_uri: str, admin: tuple[str, str], username: str, password: str) -> None:
    """Create (or reset the password of) an MLflow basic-auth user, made an MLflow admin.

    For a tracking server run with ``--app-name basic-auth`` (compose's ``airflow-init``): the
    platform's own login registers, gates and promotes every model. ``admin`` is the server's admin
    (user, password); nothing is logged.

    Raises:
        RuntimeError: naming the server, the step and its HTTP status when the server refuses.
    """
    import requests

    api = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/users"
    user: dict[str, Any] = {"username": username, "password": password}
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("create", "post", user),
        ("update-password", "patch", user),
        ("update-admin", "patch", {"username": username, "is_admin": True}),
    ]
    for step, method, body in steps:
        r = requests.request(method, f"{api}/{step}", json=body, auth=admin, timeout=30)
        if r.status_code != 200 and not (step == "create" and "RESOURCE_ALREADY_EXISTS" in r.text):
            raise RuntimeError(
                f"MLflow at {tracking_uri}: users/{step} for {username!r} failed with HTTP {r.status_code}: "
                f"{r.text[:200]} (is the admin password MLFLOW_ADMIN_PASSWORD the one of its first start?)"
            )
