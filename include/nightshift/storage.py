"""Reading and writing Parquet and small files at ``file://`` or ``s3://`` URIs.

pyarrow's own filesystems handle both schemes with one API and stream record batches, which the
scoring path needs; S3 credentials and endpoint are injected by the caller (from an Airflow
connection, through the Amazon provider), never looked up here.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs


@dataclass(frozen=True)
class Storage:
    """Resolves URIs to pyarrow filesystems.

    Args:
        s3_options: Keyword arguments for ``pyarrow.fs.S3FileSystem`` (access_key, secret_key,
            session_token, endpoint_override, region, ...). Empty means the default AWS credential chain.
        s3_credentials: Returns more such keyword arguments; called once, when the first ``s3://`` URI
            is resolved (so that a run on local files never resolves AWS credentials).
    """

    s3_options: dict[str, Any] = field(default_factory=dict)
    s3_credentials: Callable[[], dict[str, Any]] | None = field(default=None, compare=False)
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        parsed = urlparse(uri)
        if parsed.scheme == "file":
            return pafs.LocalFileSystem(), unquote(parsed.path)
        if parsed.scheme == "s3":
            return pafs.S3FileSystem(**self._s3_options()), f"{parsed.netloc}{unquote(parsed.path)}"
        raise ValueError(f"unsupported URI {uri!r}: only file:// and s3:// are supported")

    def _s3_options(self) -> dict[str, Any]:
        """The options, plus the AWS SDKs' standard endpoint variables when no endpoint is given.

        boto3 and the MLflow server read ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (S3-compatible
        stores, MinIO, moto); pyarrow does not, so one setting would otherwise point clients apart.
        """
        if self.s3_credentials is not None and "credentials" not in self._cache:
            self._cache["credentials"] = dict(self.s3_credentials())
        options = {**self._cache.get("credentials", {}), **self.s3_options}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_override" not in options:
            options["endpoint_override"] = endpoint
            options.setdefault("scheme", "https" if endpoint.startswith("https") else "http")
        return options

    def exists(self, uri: str) -> bool:
        import pyarrow.fs as pafs

        fs, path = self.resolve(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_parquet(self, uri: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pyarrow.parquet as pq

        fs, path = self.resolve(uri)
        return pq.read_table(path, filesystem=fs, columns=columns).to_pandas()

    def open_input(self, uri: str) -> Any:
        """A seekable file for streaming reads (Parquet row groups, record batches)."""
        fs, path = self.resolve(uri)
        return fs.open_input_file(path)

    def read_schema(self, uri: str) -> pa.Schema:
        import pyarrow.parquet as pq

        fs, path = self.resolve(uri)
        return pq.read_schema(path, filesystem=fs)

    def write_parquet(self, df: pd.DataFrame, uri: str) -> str:
        """Write ``df`` atomically where the filesystem allows it (temp file, then rename)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        self._atomic_write(uri, lambda fs, path: pq.write_table(table, path, filesystem=fs))
        return uri

    def write_bytes(self, data: bytes, uri: str) -> str:
        def write(fs: pafs.FileSystem, path: str) -> None:
            with fs.open_output_stream(path) as out:
                out.write(data)

        self._atomic_write(uri, write)
        return uri

    @contextmanager
    def output(self, uri: str) -> Iterator[Any]:
        """A stream to write ``uri``, which appears whole on success and not at all on failure."""
        import tempfile

        import pyarrow.fs as pafs

        fs, path = self.resolve(uri)
        parent = os.path.dirname(path)
        fs.create_dir(parent, recursive=True)
        if uri.startswith("s3://"):  # written locally first: a failed write must not upload half a file
            local = pafs.LocalFileSystem()
            with tempfile.TemporaryDirectory() as tmpdir:
                staged = os.path.join(tmpdir, os.path.basename(path))
                with local.open_output_stream(staged) as out:
                    yield out
                pafs.copy_files(staged, path, source_filesystem=local, destination_filesystem=fs)
            return
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{os.path.basename(path)}"
        try:
            with fs.open_output_stream(tmp) as out:
                yield out
            fs.move(tmp, path)
        finally:
            if fs.get_file_info(tmp).type.name != "NotFound":
                fs.delete_file(tmp)

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.resolve(uri)
        with fs.open_input_stream(path) as f:
            return f.read()

    def _atomic_write(self, uri: str, write: Any) -> None:
        fs, path = self.resolve(uri)
        parent = os.path.dirname(path)
        fs.create_dir(parent, recursive=True)
        if uri.startswith("s3://"):
            # An S3 PUT is already atomic: readers see the old object or the new one.
            write(fs, path)
            return
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{os.path.basename(path)}"
        try:
            write(fs, tmp)
            fs.move(tmp, path)
        finally:
            if fs.get_file_info(tmp).type.name != "NotFound":
                fs.delete_file(tmp)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
