"""Storage: Parquet and bytes at file:// URIs, written atomically, and a clear error for other schemes."""

from __future__ import annotations

import pandas as pd
import pytest

from include.nightshift.storage import Storage, join_uri

pytestmark = pytest.mark.unit


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([1, 2, 3], dtype="int64"),
            "charges": [10.5, None, 30.25],
            "region": ["north", None, "east"],
            "flag": [True, False, True],
        }
    )


def test_parquet_round_trip(tmp_path, frame):
    uri = (tmp_path / "churn" / "date=2026-01-01" / "part-0.parquet").as_uri()

    assert Storage().write_parquet(frame, uri) == uri
    back = Storage().read_parquet(uri)

    pd.testing.assert_frame_equal(back, frame)


def test_parquet_column_selection_and_schema(tmp_path, frame):
    uri = (tmp_path / "part-0.parquet").as_uri()
    Storage().write_parquet(frame, uri)

    assert list(Storage().read_parquet(uri, columns=["region"]).columns) == ["region"]
    assert Storage().read_schema(uri).names == ["customer_id", "charges", "region", "flag"]


def test_the_index_is_not_written(tmp_path, frame):
    uri = (tmp_path / "part-0.parquet").as_uri()
    Storage().write_parquet(frame.set_axis([7, 8, 9]), uri)
    back = Storage().read_parquet(uri)
    assert back.index.tolist() == [0, 1, 2]
    assert "__index_level_0__" not in back.columns


def test_write_leaves_only_the_target_file(tmp_path, frame):
    target = tmp_path / "out" / "part-0.parquet"
    Storage().write_parquet(frame, target.as_uri())
    Storage().write_bytes(b"report", (tmp_path / "out" / "report.json").as_uri())

    assert sorted(p.name for p in target.parent.iterdir()) == ["part-0.parquet", "report.json"]


def test_rewriting_a_partition_replaces_it(tmp_path, frame):
    uri = (tmp_path / "part-0.parquet").as_uri()
    Storage().write_parquet(frame, uri)
    Storage().write_parquet(frame.head(1), uri)

    assert len(Storage().read_parquet(uri)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["part-0.parquet"]


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    target = tmp_path / "out" / "blob.bin"
    with pytest.raises(TypeError):
        Storage().write_bytes("not bytes", target.as_uri())  # type: ignore[arg-type]
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_a_failed_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "blob.bin"
    Storage().write_bytes(b"v1", target.as_uri())
    with pytest.raises(TypeError):
        Storage().write_bytes(12345, target.as_uri())  # type: ignore[arg-type]
    assert target.read_bytes() == b"v1"


def test_exists(tmp_path):
    uri = (tmp_path / "a" / "b.bin").as_uri()
    assert not Storage().exists(uri)
    Storage().write_bytes(b"", uri)
    assert Storage().exists(uri)
    assert Storage().exists((tmp_path / "a").as_uri())


def test_bytes_round_trip(tmp_path):
    data = bytes(range(256)) * 4
    uri = (tmp_path / "x" / "blob.bin").as_uri()
    assert Storage().write_bytes(data, uri) == uri
    assert Storage().read_bytes(uri) == data


def test_uri_from_a_path_with_a_space_writes_to_that_path(tmp_path):
    # Path.as_uri() percent-encodes: "/data/my landing" -> "file:///data/my%20landing".
    target = tmp_path / "my landing" / "blob.bin"
    Storage().write_bytes(b"x", target.as_uri())
    assert target.exists(), f"written under {sorted(p.name for p in tmp_path.iterdir())} instead"
    assert Storage().read_bytes(target.as_uri()) == b"x"


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("http://example.com/data/part-0.parquet", id="http"),
        pytest.param("gs://bucket/part-0.parquet", id="gcs"),
        pytest.param("/tmp/plain/path.parquet", id="no-scheme"),
        pytest.param("relative/path.parquet", id="relative"),
    ],
)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, u: s.exists(u), id="exists"),
        pytest.param(lambda s, u: s.read_bytes(u), id="read_bytes"),
        pytest.param(lambda s, u: s.write_bytes(b"x", u), id="write_bytes"),
    ],
)
def test_unsupported_scheme_names_the_uri(uri, call):
    with pytest.raises(ValueError) as exc:
        call(Storage(), uri)
    assert repr(uri) in str(exc.value)
    assert "only file:// and s3:// are supported" in str(exc.value)


def test_s3_uri_resolves_to_bucket_and_key_with_injected_options():
    import pyarrow.fs as pafs

    fs, path = Storage({"region": "eu-west-1", "anonymous": True}).resolve("s3://bucket/landing/x.parquet")
    assert isinstance(fs, pafs.S3FileSystem)
    assert fs.region == "eu-west-1"
    assert path == "bucket/landing/x.parquet"


def test_s3_round_trip_on_moto_through_the_standard_endpoint_variable(monkeypatch):
    """pyarrow ignores AWS_ENDPOINT_URL; Storage honours it like boto3, so one setting serves both."""
    import pandas as pd

    from tests.conftest import s3_server

    with s3_server("lake") as endpoint:
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        storage = Storage()
        uri = "s3://lake/landing/churn/features/date=2026-11-20/part-0.parquet"
        assert not storage.exists(uri)
        storage.write_parquet(pd.DataFrame({"customer_id": [1, 2], "x": [0.5, 1.5]}), uri)
        storage.write_bytes(b"<html>report</html>", "s3://lake/reports/r.html")

        assert storage.read_parquet(uri)["x"].tolist() == [0.5, 1.5]
        assert storage.read_bytes("s3://lake/reports/r.html") == b"<html>report</html>"
        assert Storage({"endpoint_override": "http://127.0.0.1:1"})._s3_options()["endpoint_override"].endswith(":1")


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        pytest.param("s3://b/work/", ("runs", "/r1/"), "s3://b/work/runs/r1", id="slashes-trimmed"),
        pytest.param("file:///w", ("a.json",), "file:///w/a.json", id="file"),
        pytest.param("file:///w", (), "file:///w", id="no-parts"),
    ],
)
def test_join_uri(base, parts, expected):
    assert join_uri(base, *parts) == expected
