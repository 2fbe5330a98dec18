"""S3 credentials come from the Amazon provider (AwsBaseHook), not from parsing the connection by hand:
keys, session tokens, region and endpoint reach pyarrow's S3FileSystem."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.unit


def test_keys_session_token_region_and_endpoint_come_from_the_aws_connection(monkeypatch):
    from nightshift_airflow.hooks import s3_options

    extra = {
        "aws_session_token": "session-token-from-sts",
        "region_name": "eu-west-3",
        "endpoint_url": "http://127.0.0.1:9000",
    }
    conn = {"conn_type": "aws", "login": "AKIATEST", "password": "secret-test", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NIGHTSHIFT_TEST", json.dumps(conn))

    options = s3_options("aws_nightshift_test")

    assert options["access_key"] == "AKIATEST"
    assert options["secret_key"] == "secret-test"
    assert options["session_token"] == "session-token-from-sts"
    assert options["region"] == "eu-west-3"
    assert options["endpoint_override"] == "127.0.0.1:9000" and options["scheme"] == "http"
    import pyarrow.fs as pafs

    pafs.S3FileSystem(**options)  # every key is one pyarrow takes


def test_without_a_connection_the_default_aws_chain_is_used(monkeypatch):
    """Roles and profiles: no connection, the provider's session reads the environment (here: env keys)."""
    from nightshift_airflow.hooks import s3_options

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    options = s3_options("aws_not_defined_anywhere")
    assert (options["access_key"], options["session_token"], options["region"]) == ("AKIAENV", "env-token", "us-east-2")


def test_the_storage_asks_for_credentials_only_when_an_s3_uri_is_used(monkeypatch):
    from nightshift_airflow.hooks import storage_from_connection

    calls = []
    monkeypatch.setattr("nightshift_airflow.hooks.s3_options", lambda conn_id: calls.append(conn_id) or {})
    storage = storage_from_connection("aws_default")
    storage.exists("file:///tmp")
    assert calls == []


def test_a_profile_named_in_the_connection_is_read_by_the_provider(monkeypatch, tmp_path):
    from nightshift_airflow.hooks import s3_options

    creds = tmp_path / "credentials"
    creds.write_text(
        "[nightshift]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n"
        "aws_session_token = profile-token\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    conn = {"conn_type": "aws", "extra": {"profile_name": "nightshift", "region_name": "eu-central-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_PROFILE_TEST", json.dumps(conn))
    options = s3_options("aws_profile_test")
    assert (options["access_key"], options["secret_key"], options["session_token"]) == (
        "AKIAPROFILE",
        "profile-secret",
        "profile-token",
    )
