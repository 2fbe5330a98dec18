"""Shared fixtures.

The whole session talks to one test platform: the machine's PostgreSQL (or a project-local one when
none answers, exactly as `make run` does) with databases ``nstest_*``, a real MLflow server on a free
port, and an Airflow metadata DB. Its Airflow settings are put in the environment in
``pytest_configure``, before anything imports Airflow.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_HOME = ROOT / ".local-test"
# The fixed "today" of the test data set: runs are for this date, so results do not depend on the clock.
DATA_END = date(2026, 11, 20)
DATA_DAYS = 42

if TYPE_CHECKING:
    from collections.abc import Iterator

    from scripts.stack.settings import Stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps every message a real SMTP session delivered to it."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(envelope)
        return "250 OK"

    def mails(self) -> list:
        from email import message_from_bytes, policy

        return [message_from_bytes(m.content, policy=policy.default) for m in self.messages]

    def about(self, run_id: str) -> list:
        """The mails whose body names ``run_id``."""
        return [m for m in self.mails() if run_id in m.get_body(("plain", "html")).get_content()]


@contextmanager
def smtp_server() -> Iterator[tuple[Any, Inbox]]:
    """A real SMTP server on a free loopback port: (aiosmtpd controller, its inbox)."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """moto's S3 in server mode on a free loopback port, with ``bucket`` created; yields the endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def _test_stack() -> Stack:
    from scripts.stack.settings import Stack

    # NIGHTSHIFT_TEST_DB_PREFIX lets two checkouts run the suite side by side on one PostgreSQL server.
    prefix = os.environ.get("NIGHTSHIFT_TEST_DB_PREFIX", "nstest")
    return Stack(home=TEST_HOME, db_prefix=prefix, airflow_port=free_port(), mlflow_port=free_port())


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml puts the project root and plugins/ on the path (pytest's ``pythonpath``).
    from scripts.stack.postgres import server_url
    from scripts.stack.services import airflow_env
    from scripts.stack.settings import ensure_secrets

    stack = _test_stack()
    env = airflow_env(stack, server_url(stack), ensure_secrets(stack))
    env["NIGHTSHIFT_LANDING_ROOT"] = env["AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT"] = stack.landing_root
    env["NIGHTSHIFT_WORK_ROOT"] = env["AIRFLOW_VAR_NIGHTSHIFT_WORK_ROOT"] = stack.work_root
    # OpenLineage to the file transport (services.openlineage_env); in a thread, not the listener's
    # default forked process, which hung under pytest (the integration suite took 36 minutes).
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(stack.openlineage_file), "append": True}
    )
    env["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "True"
    os.environ.update({k: v for k, v in env.items() if k not in ("PATH",)})
    config.nightshift_stack = stack  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Stack:
    return pytestconfig.nightshift_stack  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def spec():
    from include.nightshift.spec import load_model

    return load_model("churn")


@pytest.fixture(scope="session")
def platform(stack: Stack):
    """Fresh test databases, a running MLflow server, a migrated Airflow DB with our settings."""
    import shutil

    from scripts.stack import postgres, services
    from scripts.stack.settings import ensure_secrets

    services.down(stack)  # leftovers of an interrupted session
    server = postgres.ensure_postgres(stack)
    postgres.ensure_databases(server, [stack.db("airflow"), stack.db("mlflow"), stack.db("warehouse")], reset=True)
    postgres.ensure_writer(stack, server)  # the login every DAG connects as
    for sub in ("data", "mlflow-artifacts", "airflow", "logs", "openlineage"):
        shutil.rmtree(stack.home / sub, ignore_errors=True)
    secrets = ensure_secrets(stack)
    services.start_mlflow(stack, server)
    services.prepare_airflow(stack, services.airflow_env(stack, server, secrets), secrets["admin_password"])
    yield stack
    services.down(stack)


@pytest.fixture(scope="session")
def landing(platform: Stack, spec) -> str:
    """The clean sample data set for DATA_END, in the platform's landing root."""
    from include.nightshift.sample import SampleOptions, generate

    generate(spec, platform.landing_root, SampleOptions(start=DATA_END - timedelta(days=DATA_DAYS - 1), end=DATA_END))
    return platform.landing_root


@pytest.fixture(scope="session")
def mlflow_client(platform: Stack):
    from mlflow import MlflowClient

    return MlflowClient(platform.mlflow_url)
