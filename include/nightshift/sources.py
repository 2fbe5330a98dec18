"""Where a model's daily partitions come from, and how CSV files and SQL queries become Parquet.

A spec's landing data is Parquet or CSV files at URI templates, or two SQL queries on an Airflow
connection. Every later step reads Parquet (row groups are the scoring shards, the suites read
frames), so a CSV file or a query result is first *landed*: streamed, with the column types the spec
declares, into the day's Parquet file under the work root. From there the same suites and the same
code run. Parquet landing files are read where they are.

This module never imports Airflow: a SQL source receives a DB-API connection (the operator gets it
from the connection's provider hook).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from include.nightshift.errors import DataValidationError, MissingPartitionError, SourceUnavailableError
from include.nightshift.storage import join_uri

if TYPE_CHECKING:
    from datetime import date

    import pyarrow as pa

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)

Kind = Literal["features", "labels"]


@dataclass(frozen=True)
class DataPaths:
    """The roots a run reads and writes: the landing area, and the work area landed data goes to."""

    landing_root: str
    work_root: str = ""


def needs_landing(spec: ModelSpec) -> bool:
    """Whether the model's partitions must be landed as Parquet first (CSV files and SQL queries)."""
    return spec.landing.source == "sql" or spec.landing.format == "csv"


def source_uri(spec: ModelSpec, paths: DataPaths, kind: Kind, day: date) -> str:
    """The landing file of a file source's day (Parquet or CSV), as the URI template says."""
    template = spec.landing.features if kind == "features" else spec.landing.labels
    return template(paths.landing_root, day.isoformat())


def day_uri(spec: ModelSpec, paths: DataPaths, kind: Kind, day: date) -> str:
    """The day's Parquet file every step reads: the landing file itself, or the landed copy in the work area."""
    if not needs_landing(spec):
        return source_uri(spec, paths, kind, day)
    if not paths.work_root:
        raise ValueError(f"{spec.name} lands {kind} from {spec.landing.source} sources and needs a work root")
    return join_uri(paths.work_root, spec.name, "landed", kind, f"date={day.isoformat()}", "part-0.parquet")


def arrow_schema(spec: ModelSpec, kind: Kind) -> pa.Schema:
    """The columns of a landed partition, typed as the spec declares them."""
    import pyarrow as pa

    key = pa.int64() if spec.scoring.entity_key_type == "bigint" else pa.string()
    fields = [pa.field(spec.entity_key, key)]
    if kind == "labels":
        target = {"binary": pa.int64(), "multiclass": pa.string(), "regression": pa.float64()}[spec.target.type]
        return pa.schema([*fields, pa.field(spec.target.name, target)])
    types = {"int": pa.int64(), "float": pa.float64(), "category": pa.string()}
    return pa.schema([*fields, *(pa.field(f.name, types[f.type]) for f in spec.input_features)])


@dataclass(frozen=True)
class Landed:
    """One landed partition: where it is now, how many rows, and where it came from."""

    uri: str
    rows: int
    source: str
    kind: Kind


def land_day(storage: Storage, spec: ModelSpec, paths: DataPaths, kind: Kind, day: date, connect: Any = None) -> Landed:
    """Land one day's partition as Parquet (a CSV file, or the query's rows for ``day``).

    Args:
        connect: For a SQL source: returns a DB-API connection (closed here after use).

    Raises:
        MissingPartitionError: a CSV file of the day is not there.
        DataValidationError: the file or the query has the wrong columns or values that are not of the
            declared type; the message names the file or the connection and query, and the columns.
        SourceUnavailableError: the database could not be reached (retried).
    """
    target = day_uri(spec, paths, kind, day)
    if spec.landing.source == "sql":
        query = str(spec.landing.features_query if kind == "features" else spec.landing.labels_query)
        conn = connect()
        try:
            rows = land_query(storage, spec, kind, conn, str(spec.landing.conn_id), query, day, target)
        finally:
            conn.close()
        return Landed(target, rows, f"{spec.landing.conn_id}: {first_line(query)}", kind)
    uri = source_uri(spec, paths, kind, day)
    return Landed(target, land_csv(storage, spec, kind, uri, target), uri, kind)


def first_line(query: str) -> str:
    line = next((ln.strip() for ln in query.strip().splitlines() if ln.strip()), "")
    return line if len(line) <= 120 else line[:117] + "..."


def _check_columns(spec: ModelSpec, kind: Kind, where: str, names: list[str], extra_ok: bool = False) -> None:
    """The columns the spec expects are there (and, unless ``extra_ok``, no others)."""
    expected = arrow_schema(spec, kind).names
    missing = [c for c in expected if c not in names]
    extra = [] if extra_ok else [c for c in names if c not in expected]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unexpected {', '.join(extra)}" if extra else ""]
        raise DataValidationError(
            f"{where}: the {kind} columns do not match the spec of {spec.name}: "
            f"{'; '.join(p for p in parts if p)} (the spec expects {', '.join(expected)})"
        )


def land_csv(storage: Storage, spec: ModelSpec, kind: Kind, uri: str, target: str) -> int:
    """Stream a CSV file into Parquet with the spec's column types; returns the rows written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not storage.exists(uri):
        raise MissingPartitionError(f"{kind} file {uri} does not exist: this day's {kind} have not landed")
    schema = arrow_schema(spec, kind)
    with storage.open_input(uri) as f:
        header = next(csv.reader(io.TextIOWrapper(io.BytesIO(f.read(1 << 16)), encoding="utf-8")), [])
    _check_columns(spec, kind, uri, header, extra_ok=True)  # files may carry more columns, as Parquet ones may
    convert = pacsv.ConvertOptions(
        column_types={fld.name: fld.type for fld in schema}, strings_can_be_null=True, include_columns=schema.names
    )
    rows = 0
    try:
        with storage.open_input(uri) as f, storage.output(target) as out:
            reader = pacsv.open_csv(f, convert_options=convert, read_options=pacsv.ReadOptions(block_size=1 << 24))
            with pq.ParquetWriter(out, schema) as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
                    rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise DataValidationError(
            f"{uri}: a value does not have the type the spec declares for its column: {exc}"
        ) from None
    return rows


def _cursor(conn: Any) -> Any:
    """A server-side cursor where the driver has them (so a large result streams), else a plain one."""
    try:
        return conn.cursor(name="nightshift_landing")
    except TypeError:
        return conn.cursor()


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    import pyarrow as pa
    import pyarrow.types as pat

    if pat.is_floating(kind):
        values = [None if v is None else float(v) for v in values]
    elif pat.is_integer(kind):
        values = [None if v is None else int(v) for v in values]
    else:
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=kind)


def land_query(
    storage: Storage, spec: ModelSpec, kind: Kind, conn: Any, conn_id: str, query: str, day: date, target: str
) -> int:
    """Run ``query`` for ``day`` (bound by the driver as ``%(date)s``) and stream its rows into Parquet.

    Raises:
        DataValidationError: the query fails or returns other columns (final: retrying gives the same).
        SourceUnavailableError: the database cannot be reached or the connection broke (retried).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"query on connection {conn_id!r} ({first_line(query)})"
    schema = arrow_schema(spec, kind)
    batch = spec.scoring.batch_rows
    cur = _cursor(conn)
    try:
        cur.execute(query, {"date": day})
        chunk = cur.fetchmany(batch)
        names = [d[0] for d in cur.description or ()]
        _check_columns(spec, kind, where, names)
        order = [names.index(c) for c in schema.names]
        rows = 0
        with storage.output(target) as out, pq.ParquetWriter(out, schema) as writer:
            while True:
                columns = [_column([r[i] for r in chunk], schema.field(j).type) for j, i in enumerate(order)]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                rows += len(chunk)
                chunk = cur.fetchmany(batch)
                if not chunk:
                    break
    except DataValidationError:
        raise
    except (pa.ArrowInvalid, TypeError, ValueError) as exc:
        raise DataValidationError(f"{where}: a value does not have the type the spec declares: {exc}") from None
    except Exception as exc:
        if type(exc).__name__ in ("OperationalError", "InterfaceError"):
            raise SourceUnavailableError(f"{where} could not reach the database: {exc}") from exc
        raise DataValidationError(f"{where} failed: {type(exc).__name__}: {str(exc).strip()}") from None
    finally:
        cur.close()
    return rows


def land_days(
    storage: Storage, spec: ModelSpec, paths: DataPaths, kinds: tuple[Kind, ...], days: list[date], connect: Any = None
) -> list[Landed]:
    """Land ``kinds`` of every day (one query or file each); what was landed, in order."""
    landed = []
    for day in days:
        for kind in kinds:
            landed.append(land_day(storage, spec, paths, kind, day, connect))
            log.info("landed %s of %s: %d rows from %s", kind, day, landed[-1].rows, landed[-1].source)
    return landed
