"""Batch scoring: stream a day's features in record batches, predict, and COPY into staging.

Memory is bounded by ``scoring.batch_rows``, not by the size of the day: the Parquet file is read one
record batch at a time, rows that break a row-level rule are set aside for the quarantine, the rest
are predicted and serialised to CSV by Arrow, and a bounded queue hands the bytes to PostgreSQL's
``COPY``. Reading and predicting run in a worker thread while the main thread feeds ``COPY``, so the
database load overlaps with the model (sklearn, Arrow and psycopg2 release the GIL in their hot loops).

A day larger than ``scoring.shard_rows`` is split into shards of whole Parquet row groups; each shard is
scored by its own (mapped) task into its own staging table, and :mod:`warehouse` joins them.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError, MissingPartitionError
from include.nightshift.validation import schema_problems

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import date

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage
    from include.nightshift.warehouse import Constants, Tables

log = logging.getLogger(__name__)


# --- the day's input and its shards ---------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """A contiguous run of Parquet row groups of the day's file."""

    index: int
    row_groups: tuple[int, ...]
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "row_groups": list(self.row_groups), "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shard:
        return cls(int(d["index"]), tuple(int(g) for g in d["row_groups"]), int(d["rows"]))


def plan_shards(row_group_rows: list[int], shard_rows: int) -> list[Shard]:
    """Group consecutive row groups into shards of at least ``shard_rows`` rows (the last may be smaller).

    A single row group is never split, so a file written as one huge row group is one shard.
    """
    shards: list[Shard] = []
    groups: list[int] = []
    rows = 0
    for i, n in enumerate(row_group_rows):
        groups.append(i)
        rows += n
        if rows >= shard_rows:
            shards.append(Shard(len(shards), tuple(groups), rows))
            groups, rows = [], 0
    if groups:
        shards.append(Shard(len(shards), tuple(groups), rows))
    return shards


def check_input_schema(spec: ModelSpec, uri: str, schema: pa.Schema) -> None:
    """The day's file has every column the model needs, with usable types.

    Raises:
        DataValidationError: names the file, the column, its type and what the spec needs.
    """
    problems = schema_problems(spec, "raw_features", uri, schema)
    key = spec.entity_key
    if key in schema.names and spec.scoring.entity_key_type == "bigint":
        import pyarrow.types as pat

        if not pat.is_integer(schema.field(key).type):
            problems.append(
                f"{uri}: column '{key}' has type {schema.field(key).type}; scoring.entity_key_type is bigint"
            )
    if problems:
        raise DataValidationError(
            f"input of {spec.name}_scoring: {len(problems)} schema problem(s):\n  - " + "\n  - ".join(problems)
        )


def inspect_input(storage: Storage, spec: ModelSpec, uri: str) -> tuple[int, list[Shard]]:
    """Check the day's file exists, is not empty and has the right schema; plan its shards.

    Raises:
        MissingPartitionError: there is no file for the day.
        DataValidationError: the file is empty, or its schema breaks the spec.
    """
    import pyarrow.parquet as pq

    if not storage.exists(uri):
        raise MissingPartitionError(
            f"input partition {uri} does not exist: the features of this day have not landed. "
            "The scores of the day were left as they were; re-run the date once the file is there."
        )
    with storage.open_input(uri) as f:
        meta = pq.ParquetFile(f).metadata
        schema = meta.schema.to_arrow_schema()
    total = meta.num_rows
    if total == 0:  # checked first: an empty file's column types say nothing
        raise DataValidationError(
            f"input partition {uri} has 0 rows; a day needs at least 1. The scores of the day were left as they were."
        )
    check_input_schema(spec, uri, schema)
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return total, plan_shards(groups, spec.scoring.shard_rows)


def read_sample(storage: Storage, spec: ModelSpec, uri: str, day: date, max_rows: int) -> pd.DataFrame:
    """The day's rows for the GX input suite: all of them, or an even spread of ``max_rows`` of them.

    Every row is still checked against the row rules while scoring; the suite judges the day as a
    whole (volume, share of broken rows, distribution) and a sample is enough for that.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.datasets import DATE_COLUMN
    from include.nightshift.validation import SOURCE_COLUMN

    with storage.open_input(uri) as f:
        pf = pq.ParquetFile(f)
        total = pf.metadata.num_rows
        step = max(1, -(-total // max_rows))
        batch_rows = max(1000, min(spec.scoring.batch_rows, max_rows))
        parts = [b for i, b in enumerate(pf.iter_batches(batch_size=batch_rows)) if i % step == 0]
    frame = pa.Table.from_batches(parts).to_pandas() if parts else pd.DataFrame()
    frame[SOURCE_COLUMN] = uri
    frame[DATE_COLUMN] = pd.Timestamp(day)
    return frame


# --- row-level rules ------------------------------------------------------------------------------


def row_rules(spec: ModelSpec) -> list[tuple[str, Callable[[pa.RecordBatch], pa.Array]]]:
    """(rule, function returning a boolean "row breaks it" mask), in the order they are checked.

    The rules are the spec's: non-null entity key and non-nullable features, finite numbers,
    ``min``/``max`` and ``categories``. A row is quarantined under the first rule it breaks.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    def null(col: str) -> Callable[[pa.RecordBatch], pa.Array]:
        return lambda b: pc.is_null(b.column(col), nan_is_null=True)

    rules: list[tuple[str, Callable[[pa.RecordBatch], pa.Array]]] = [
        (f"{spec.entity_key} not null", null(spec.entity_key))
    ]
    for f in spec.features:
        if not f.nullable:
            rules.append((f"{f.name} not null", null(f.name)))
        if f.type == "float":
            rules.append((f"{f.name} finite", lambda b, c=f.name: pc.fill_null(pc.is_inf(b.column(c)), False)))
        if f.type in ("int", "float") and (f.min is not None or f.max is not None):
            lo, hi = f.min, f.max

            def out_of_range(b: pa.RecordBatch, c: str = f.name, lo: float | None = lo, hi: float | None = hi) -> Any:
                col = b.column(c)
                bad = pa.array([False] * len(col)) if lo is None else pc.less(col, lo)
                if hi is not None:
                    bad = pc.or_(bad, pc.greater(col, hi))
                return pc.fill_null(bad, False)

            rules.append((f"{f.name} between {_num(lo)} and {_num(hi)}", out_of_range))
        if f.type == "category":
            allowed = pa.array(list(f.categories or ()))

            def not_in(b: pa.RecordBatch, c: str = f.name, allowed: pa.Array = allowed) -> Any:
                col = b.column(c)
                return pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, value_set=allowed)))

            rules.append((f"{f.name} in [{', '.join(f.categories or ())}]", not_in))
    return rules


def _num(v: float | None) -> str:
    if v is None:
        return "-inf"
    return str(int(v)) if float(v).is_integer() else str(v)


def split_batch(
    batch: pa.RecordBatch, rules: list[tuple[str, Callable[[pa.RecordBatch], pa.Array]]]
) -> tuple[pa.RecordBatch, pa.RecordBatch | None, pa.Array | None]:
    """(rows that pass every rule, rows that break one, the first broken rule of each of those)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rule_of = pa.nulls(batch.num_rows, pa.string())
    # Later rules first, so the first rule a row breaks is the one that sticks.
    for name, breaks in reversed(rules):
        rule_of = pc.if_else(breaks(batch), pa.scalar(name), rule_of)
    bad = pc.is_valid(rule_of)
    if not pc.any(bad).as_py():
        return batch, None, None
    return batch.filter(pc.invert(bad)), batch.filter(bad), rule_of.filter(bad)


# --- predict and serialise -------------------------------------------------------------------------


def predict(spec: ModelSpec, model: Any, batch: pa.RecordBatch) -> np.ndarray:
    """Positive-class probabilities for a batch, with the model input the signature expects."""
    from include.nightshift.training import model_input

    frame = batch.select(spec.feature_names).to_pandas()
    return model.predict_proba(model_input(spec, frame))[:, 1]


# PostgreSQL's binary COPY format: a header, then per row a field count and length-prefixed big-endian
# values, then a trailer. For an integer key every row has the same layout, so numpy writes a whole
# batch at once and the server does no number parsing (CSV float parsing was its largest cost).
COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def scores_binary(keys: pa.Array, scores: np.ndarray, threshold: float) -> bytes:
    """Binary COPY rows ``(bigint key, float8 score, int2 predicted_label)``."""
    import numpy as np

    row = np.dtype(
        [("n", ">i2"), ("kl", ">i4"), ("k", ">i8"), ("sl", ">i4"), ("s", ">f8"), ("pl", ">i4"), ("p", ">i2")]
    )
    out = np.empty(len(scores), dtype=row)
    out["n"], out["kl"], out["sl"], out["pl"] = 3, 8, 8, 2
    out["k"] = keys.to_numpy(zero_copy_only=False)
    out["s"] = scores
    out["p"] = scores >= threshold
    return out.tobytes()


def scores_csv(keys: pa.Array, scores: np.ndarray, threshold: float) -> bytes:
    """CSV rows ``key,score,predicted_label`` for COPY (text keys; Arrow's writer, no loop per row)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(
        {"k": keys, "score": pa.array(scores, pa.float64()), "label": pa.array((scores >= threshold).astype(np.int8))}
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def quarantine_csv(spec: ModelSpec, rows: pa.RecordBatch, rules: pa.Array) -> bytes:
    """CSV rows ``entity_key,rule,row-as-json`` for the quarantine staging table."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    frame = rows.select([spec.entity_key, *spec.feature_names]).to_pandas()
    as_json = frame.to_json(orient="records", lines=True, date_format="iso").splitlines()
    table = pa.table(
        {
            "key": pc.cast(rows.column(spec.entity_key), pa.string()),
            "rule": rules,
            "row": pa.array(as_json, pa.string()),
        }
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()


# --- one shard, end to end ------------------------------------------------------------------------


@dataclass
class ShardResult:
    shard: int
    input_rows: int = 0
    scored_rows: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def quarantined_rows(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_batches(
    storage: Storage, uri: str, columns: list[str], row_groups: tuple[int, ...], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    with storage.open_input(uri) as f:
        # One row group at a time and no pre-buffering: pyarrow would otherwise fetch every requested
        # row group up front, and memory would grow with the shard (measured: +50 MB at 5M rows).
        pf = pq.ParquetFile(f, pre_buffer=False)
        for group in row_groups:
            yield from pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)


class _QueueReader:
    """A file-like object for ``copy_expert`` that reads CSV chunks from a queue filled by the producer."""

    def __init__(self, q: queue.Queue[bytes | BaseException | None]) -> None:
        self.q = q
        self.done = False

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        item = self.q.get()
        if item is None:
            self.done = True
            return b""
        if isinstance(item, BaseException):
            self.done = True
            raise item
        return item


def score_shard(
    conn: connection,
    quarantine_conn: connection,
    storage: Storage,
    spec: ModelSpec,
    tables: Tables,
    consts: Constants,
    model: Any,
    uri: str,
    shard: Shard,
    heartbeat: Callable[[], None] | None = None,
) -> ShardResult:
    """Score one shard of the day into its staging tables and commit them.

    The scores staging table is created and loaded in one transaction on ``conn`` (a retry re-creates
    it; a killed attempt leaves nothing behind); quarantined rows go through ``quarantine_conn``.

    Returns:
        Row counts, quarantined rows per rule, and a few example keys per rule.
    """
    from psycopg2 import errors

    from include.nightshift import warehouse

    result = ShardResult(shard=shard.index)
    rules = row_rules(spec)
    columns = [spec.entity_key, *spec.feature_names]
    threshold = spec.training.decision_threshold
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()
    qcur = quarantine_conn.cursor()

    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    failure: list[BaseException] = []
    binary = tables.key_type == "bigint"
    encode = scores_binary if binary else scores_csv

    def produce() -> None:
        try:
            if binary:
                put(COPY_BINARY_HEADER)
            counts: Counter[str] = Counter()
            for batch in iter_batches(storage, uri, columns, shard.row_groups, spec.scoring.batch_rows):
                if stop.is_set():
                    return
                result.input_rows += batch.num_rows
                good, bad, bad_rules = split_batch(batch, rules)
                if bad is not None:
                    qcur.copy_expert(
                        warehouse.copy_quarantine_sql(tables, q_table), io.BytesIO(quarantine_csv(spec, bad, bad_rules))
                    )
                    keys = bad.column(spec.entity_key).to_pylist()
                    for rule, key in zip(bad_rules.to_pylist(), keys, strict=True):
                        counts[rule] += 1
                        ex = result.examples.setdefault(rule, [])
                        if len(ex) < 5:
                            ex.append(str(key))
                if good.num_rows:
                    scores = predict(spec, model, good)
                    result.scored_rows += good.num_rows
                    put(encode(good.column(spec.entity_key), scores, threshold))
                if heartbeat is not None:
                    heartbeat()
            result.quarantined = dict(counts)
            if binary:
                put(COPY_BINARY_TRAILER)
            put(None)
        except BaseException as exc:  # handed to the COPY side, which aborts the COPY
            failure.append(exc)
            put(exc)

    # Two connections, two transactions, each (re-)creating and loading its own staging table: a
    # retry starts over; a killed attempt leaves nothing (the server rolls both back). Quarantine
    # commits first, so committed scores always come with their quarantine rows.
    with quarantine_conn, conn, conn.cursor() as cur:
        q_table = warehouse.create_quarantine_staging(qcur, tables, consts, shard.index)
        s_table = warehouse.create_scores_staging(cur, tables, consts, shard.index)
        worker = threading.Thread(target=produce, name=f"score-shard-{shard.index}", daemon=True)
        worker.start()
        try:
            cur.copy_expert(warehouse.copy_scores_sql(tables, s_table, binary), _QueueReader(chunks), size=1 << 20)
        except errors.QueryCanceled:
            if failure:  # psycopg2 reports the reader's exception as a cancelled COPY: raise the original
                raise failure[0] from None
            raise
        finally:
            stop.set()
            worker.join()
        quarantine_conn.commit()
    log.info(
        "shard %d: %d input rows, %d scored, %d quarantined into %s.%s",
        shard.index,
        result.input_rows,
        result.scored_rows,
        result.quarantined_rows,
        tables.staging_schema,
        s_table,
    )
    return result
