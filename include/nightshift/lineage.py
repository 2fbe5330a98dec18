"""OpenLineage datasets for what the platform reads and writes, named by the OpenLineage conventions.

- a landing or work file: ``file://`` → namespace ``file``, name the absolute path; ``s3://bucket/key``
  → namespace ``s3://bucket``, name the key;
- a PostgreSQL table: namespace ``postgres://host:port``, name ``database.schema.table``;
- an MLflow registered model version: namespace ``mlflow://host:port`` (the tracking server), name
  ``<model>/versions/<n>`` (no convention exists for model registries; this one is stable and readable);
- a GX result: a ``dataQualityAssertions`` facet on the dataset it checked.

The operators collect a :class:`Lineage` while they run and hand it to the Airflow OpenLineage
provider (``get_openlineage_facets_on_complete``). Plain OpenLineage client classes; no Airflow.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset


def file_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a ``file://`` or ``s3://`` URI."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return "file", urllib.parse.unquote(parts.path)
    if parts.scheme in ("s3", "s3a"):
        return f"s3://{parts.netloc}", parts.path.lstrip("/")
    raise ValueError(f"{uri!r} is not a file:// or s3:// URI")


def table_dataset(connection_uri: str, schema: str, table: str) -> tuple[str, str]:
    """(namespace, name) of ``schema.table`` in the database a ``postgresql://`` URI names."""
    parts = urllib.parse.urlsplit(connection_uri)
    database = parts.path.lstrip("/")
    return f"postgres://{parts.hostname or 'localhost'}:{parts.port or 5432}", f"{database}.{schema}.{table}"


def query_tables(query: str, scheme: str, host: str, port: int | None, database: str) -> list[tuple[str, str]]:
    """(namespace, name) of each table a SQL source's query reads (OpenLineage's own SQL parser).

    ``scheme`` is the connection's database type (``postgres``, ``mysql``, ...); a table without a schema
    is in ``public``. A query the parser cannot read names no tables (lineage is best effort).
    """
    import re

    from openlineage.common.sql import parse

    literal = re.sub(r"%\(date\)s", "'1970-01-01'", query)  # the parser reads SQL, not driver placeholders
    meta = parse([literal], dialect=scheme if scheme in ("postgres", "mysql", "snowflake") else "generic")
    namespace = f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"
    tables = meta.in_tables if meta else []
    return [(namespace, f"{t.database or database}.{t.schema or 'public'}.{t.name}") for t in tables]


def model_version_dataset(tracking_uri: str, model: str, version: int | str) -> tuple[str, str]:
    """(namespace, name) of a registered MLflow model version."""
    parts = urllib.parse.urlsplit(tracking_uri)
    return f"mlflow://{parts.netloc or parts.path}", f"{model}/versions/{version}"


def quality_assertions(result: dict[str, Any]) -> Any:
    """A GX result (``describe_dict()`` form) as an OpenLineage ``DataQualityAssertionsDatasetFacet``."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    assertions = [
        dq.Assertion(
            assertion=str(e.get("expectation_type")),
            success=bool(e.get("success")),
            column=(e.get("kwargs") or {}).get("column"),
        )
        for e in result.get("expectations", [])
    ]
    return dq.DataQualityAssertionsDatasetFacet(assertions=assertions)


@dataclass
class Lineage:
    """What one task read and wrote, as (namespace, name) pairs, with facets on the inputs."""

    inputs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    outputs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def read(self, dataset: tuple[str, str], **facets: Any) -> None:
        self.inputs.setdefault(dataset, {}).update(facets)

    def wrote(self, dataset: tuple[str, str]) -> None:
        self.outputs.setdefault(dataset, {})

    def datasets(self) -> tuple[list[InputDataset], list[OutputDataset]]:
        """The OpenLineage input and output datasets (a data-quality facet rides on its input)."""
        from openlineage.client.event_v2 import InputDataset, OutputDataset

        inputs = [
            InputDataset(namespace=ns, name=name, inputFacets=facets) for (ns, name), facets in self.inputs.items()
        ]
        outputs = [OutputDataset(namespace=ns, name=name) for ns, name in self.outputs]
        return inputs, outputs
