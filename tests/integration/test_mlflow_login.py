"""MLflow behind a login (compose's setup): a real ``mlflow server --app-name basic-auth``.

An anonymous client cannot move ``@champion``; the MlflowHook's client, with the credentials of the
Airflow connection, can, and no credentials land in ``os.environ``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "adm1n-Passw0rd-for-the-test"
PASSWORD = "n1ghtshift-Passw0rd-for-the-test"


@pytest.fixture(scope="module")
def auth_server():
    from scripts.stack.processes import wait_http
    from scripts.stack.services import base_env

    home = Path(tempfile.mkdtemp(prefix="nightshift-mlflow-auth-"))
    ini = (Path(__file__).resolve().parents[2] / "docker" / "mlflow-auth.ini").read_text()
    (home / "auth.ini").write_text(ini.replace("sqlite:////mlflow/auth/", f"sqlite:///{home}/"))
    port = free_port()
    env = {
        **base_env(),
        "MLFLOW_AUTH_CONFIG_PATH": str(home / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-secret-key-for-the-test",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth"]
    cmd += ["--backend-store-uri", f"sqlite:///{home}/mlflow.db", "--artifacts-destination", (home / "a").as_uri()]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(home / "mlflow.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", "MLflow basic-auth server", 120, home / "mlflow.log", lambda: proc.poll() is None)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def anonymous(url: str, path: str, body: dict) -> int:
    """An HTTP request without credentials; its status."""
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_anonymous_cannot_move_an_alias_the_hooks_client_can(auth_server, monkeypatch):
    from include.nightshift.tracking import ensure_login, set_credentials
    from nightshift_airflow.hooks import MlflowHook

    ensure_login(auth_server, ("admin", ADMIN_PASSWORD), "nightshift", PASSWORD)
    port = auth_server.rsplit(":", 1)[1]
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": int(port),
        "schema": "http",
        "login": "nightshift",
        "password": PASSWORD,
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_LOCKED", json.dumps(conn))
    before = dict(os.environ)
    try:
        client = MlflowHook("mlflow_locked").get_conn()
        client.create_registered_model("locked")
        client.create_model_version("locked", source="s3://bucket/models/m-1", run_id=None)
        client.create_model_version("locked", source="s3://bucket/models/m-2", run_id=None)
        client.set_registered_model_alias("locked", "champion", "1")

        status = anonymous(
            auth_server, "registered-models/alias", {"name": "locked", "alias": "champion", "version": "2"}
        )
        assert status == 401
        assert client.get_model_version_by_alias("locked", "champion").version == "1", "the alias did not move"

        client.set_registered_model_alias("locked", "champion", "2")
        assert client.get_model_version_by_alias("locked", "champion").version == "2"
        assert {k: v for k, v in os.environ.items() if v != before.get(k)} == {}, "no credentials in os.environ"
        assert not any(k.startswith("MLFLOW_TRACKING_") and k.endswith(("USERNAME", "PASSWORD")) for k in os.environ)
    finally:
        set_credentials(auth_server, None, None)  # the session's other MLflow server has no login

    # a wrong password is refused too
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    set_credentials(auth_server, "nightshift", "wrong")
    try:
        with pytest.raises(MlflowException, match="401|nauthorized|redentials"):
            # registry_uri too: scoring sets the process-wide registry URI to the session's other server.
            wrong = MlflowClient(tracking_uri=auth_server, registry_uri=auth_server)
            wrong.set_registered_model_alias("locked", "champion", "1")
    finally:
        set_credentials(auth_server, None, None)
