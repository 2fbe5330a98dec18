"""Scoring one shard of a day, end to end: stream, split off bad rows, predict, COPY into staging.

Memory is bounded by ``scoring.batch_rows``, not by the size of the day: the Parquet file is read one
record batch at a time, rows that break a row-level rule are set aside for the quarantine, the rest
are predicted and serialised, and a bounded queue hands the bytes to PostgreSQL's ``COPY``. Reading
and predicting run in a worker thread while the main thread feeds ``COPY``, so the database load
overlaps with the model (sklearn, Arrow and psycopg2 release the GIL in their hot loops).
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.nightshift.scoring import encode
from include.nightshift.scoring.rules import row_rules, split_batch, with_derived
from include.nightshift.warehouse import staging
from include.nightshift.warehouse.lease import hold_claim

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow as pa
    from psycopg2.extensions import connection, cursor

    from include.nightshift.scoring.inputs import Shard
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage
    from include.nightshift.warehouse.staging import Constants
    from include.nightshift.warehouse.tables import Tables

log = logging.getLogger(__name__)

Chunk = bytes | BaseException | None


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardResult:
        return cls(
            shard=int(d["shard"]),
            input_rows=int(d["input_rows"]),
            scored_rows=int(d["scored_rows"]),
            quarantined={str(k): int(v) for k, v in d["quarantined"].items()},
            examples={str(k): [str(x) for x in v] for k, v in d["examples"].items()},
        )


@dataclass(frozen=True)
class ShardJob:
    """Everything that says which rows one shard task scores, with which model, into which tables."""

    spec: ModelSpec
    tables: Tables
    consts: Constants
    storage: Storage
    uri: str
    shard: Shard
    model: Any
    # Threads the model may use (OpenMP, BLAS) while predicting this shard; None: the library's default.
    threads: int | None = None


def model_threads(spec: ModelSpec, shards: int) -> int:
    """Threads for one shard's model: ``scoring.model_threads``, else this host's cores shared by the shards
    that run at once (the day's ``shards``, at most the pool's ``scoring.shard_slots``).

    Parallel shards each running an OpenMP model with one thread per core oversubscribe the machine
    (two shards on two cores: four spinning threads); measured on 2 cores, two concurrent 1.7M-row
    shards took 13.3 s each with the default threads and 6.8 s with one thread each. A day of one
    shard keeps every core.
    """
    if spec.scoring.model_threads:
        return spec.scoring.model_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, min(shards, spec.scoring.shard_slots)))


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
    """A file-like object for ``copy_expert`` that reads chunks from a queue filled by the producer."""

    def __init__(self, q: queue.Queue[Chunk]) -> None:
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


class _Producer:
    """The worker thread's side: read, split, predict, encode, and hand the bytes to COPY."""

    def __init__(self, job: ShardJob, qcur: cursor, heartbeat: Callable[..., None] | None) -> None:
        self.job, self.qcur, self.heartbeat = job, qcur, heartbeat
        self.result = ShardResult(shard=job.shard.index)
        self.chunks: queue.Queue[Chunk] = queue.Queue(maxsize=4)
        self.stop = threading.Event()
        self.failure: list[BaseException] = []
        self.binary = encode.binary_copy(job.spec, job.tables.key_type)
        self.q_table = ""

    def put(self, item: Chunk) -> None:
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _quarantine(self, bad: pa.RecordBatch, bad_rules: pa.Array, counts: Counter[str]) -> None:
        spec, tables = self.job.spec, self.job.tables
        sql = staging.copy_quarantine_sql(tables, self.q_table)
        self.qcur.copy_expert(sql, io.BytesIO(encode.quarantine_csv(spec, bad, bad_rules)))
        keys = bad.column(spec.entity_key).to_pylist()
        for rule, key in zip(bad_rules.to_pylist(), keys, strict=True):
            counts[rule] += 1
            examples = self.result.examples.setdefault(rule, [])
            if len(examples) < 5:
                examples.append(str(key))

    def run(self) -> None:
        from threadpoolctl import threadpool_limits

        # Set in this thread: OpenMP's thread count is per calling thread, so a limit set by the
        # task's main thread would not reach the model here.
        if self.job.threads is None:
            self._run()
            return
        with threadpool_limits(limits=self.job.threads):
            self._run()

    def _run(self) -> None:
        job, spec = self.job, self.job.spec
        serialise = encode.encoder(spec, self.binary)
        rules = row_rules(spec)
        columns = [spec.entity_key, *spec.input_names]
        try:
            if self.binary:
                self.put(encode.COPY_BINARY_HEADER)
            counts: Counter[str] = Counter()
            for batch in iter_batches(job.storage, job.uri, columns, job.shard.row_groups, spec.scoring.batch_rows):
                if self.stop.is_set():
                    return
                self.result.input_rows += batch.num_rows
                good, bad, bad_rules = split_batch(with_derived(spec, batch), rules)
                if bad is not None and bad_rules is not None:
                    self._quarantine(bad, bad_rules, counts)
                if good.num_rows:
                    scores = encode.predict(spec, job.model, good)
                    self.result.scored_rows += good.num_rows
                    self.put(serialise(good.column(spec.entity_key), scores))
                if self.heartbeat is not None:
                    self.heartbeat()
            self.result.quarantined = dict(counts)
            if self.binary:
                self.put(encode.COPY_BINARY_TRAILER)
            self.put(None)
        except BaseException as exc:  # handed to the COPY side, which aborts the COPY
            self.failure.append(exc)
            self.put(exc)


def score_shard(
    conn: connection, quarantine_conn: connection, job: ShardJob, heartbeat: Callable[..., None] | None = None
) -> ShardResult:
    """Score one shard of the day into the run's staging tables and commit them.

    The shard's rows go into the run's one scores staging table (created by whichever shard comes
    first), in one transaction on ``conn`` that also writes the shard's ledger row: a killed attempt
    leaves none of its rows behind, and a shard whose rows already committed (an earlier try that died
    after its commit) is not scored again: its stored result is returned. Quarantined rows go to the
    shard's own quarantine table through ``quarantine_conn``.

    Returns:
        Row counts, quarantined rows per rule, and a few example keys per rule.
    """
    from psycopg2 import errors

    tables, consts, index = job.tables, job.consts, job.shard.index
    s_table = staging.ensure_scores_staging(conn, tables, consts)
    producer = _Producer(job, quarantine_conn.cursor(), heartbeat)
    # Two connections, two transactions: the shard's ledger row and its scores on ``conn``, its
    # (re-created) quarantine table on ``quarantine_conn``. A killed attempt leaves nothing of its own
    # (the server rolls both back). Quarantine commits first, so committed scores always come with
    # their quarantine rows.
    with conn, conn.cursor() as cur:
        # Taken first: a concurrent attempt of this shard waits here until this one ends.
        stored = staging.claim_shard(cur, tables, consts, index)
        if stored is not None:
            done = ShardResult.from_dict(stored)
            log.info(
                "shard %d was loaded by an earlier try (%d input rows, %d scored, %d quarantined): not scored again",
                index,
                done.input_rows,
                done.scored_rows,
                done.quarantined_rows,
            )
            return done
        with quarantine_conn:
            producer.q_table = staging.create_quarantine_staging(producer.qcur, tables, consts, index)
            worker = threading.Thread(target=producer.run, name=f"score-shard-{index}", daemon=True)
            worker.start()
            try:
                copy = staging.copy_scores_sql(tables, s_table, producer.binary)
                cur.copy_expert(copy, _QueueReader(producer.chunks), size=1 << 20)
            except errors.QueryCanceled:
                if producer.failure:  # psycopg2 reports the reader's exception as a cancelled COPY: raise the original
                    raise producer.failure[0] from None
                raise
            finally:
                producer.stop.set()
                worker.join()
            staging.record_shard(cur, tables, consts, index, producer.result.as_dict())
            if heartbeat is not None:
                # The input suite runs beside the shards: a shard commits only while the run holds the
                # date (had the suite failed and given it back, the rows are rolled back here).
                hold_claim(cur, tables, consts.day, consts.dag_run_id)
    r = producer.result
    log.info(
        "shard %d: %d input rows, %d scored, %d quarantined into %s.%s",
        index,
        r.input_rows,
        r.scored_rows,
        r.quarantined_rows,
        tables.staging_schema,
        s_table,
    )
    return r
