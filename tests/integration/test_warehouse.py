"""The warehouse side of scoring against the real PostgreSQL: atomic swaps under SIGKILL, the lease
between concurrent runs, the quarantine threshold, and what the analyst role may and may not do.

Each test works in its own schema (``scoring.schema`` of a spec copy), so tests do not share tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 19)


@pytest.fixture(scope="module")
def server(platform):
    from scripts.stack.postgres import ensure_postgres

    return ensure_postgres(platform)


@pytest.fixture(scope="module")
def db_url(server, platform):
    return f"{server}/{platform.db('warehouse')}"


@pytest.fixture
def connect(db_url):
    import psycopg2

    opened = []

    def _connect(url: str | None = None):
        conn = psycopg2.connect(url or db_url)
        opened.append(conn)
        return conn

    yield _connect
    for c in opened:
        c.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A fitted pipeline (logistic regression on random labels: fast, and good enough to score)."""
    import numpy as np

    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage
    from include.nightshift.training import build_pipeline, model_input

    spec = load_model("churn")
    root = tmp_path_factory.mktemp("wh-landing").as_uri()
    generate(spec, root, SampleOptions(start=DAY, end=DAY, rows_per_day=3000, population=10_000))
    df = Storage().read_parquet(spec.landing.features(root, DAY.isoformat()))
    y = (np.random.default_rng(0).random(len(df)) < 0.2).astype(int)
    return build_pipeline(spec, "logistic_regression").fit(model_input(spec, df), y)


@pytest.fixture
def spec(request):
    """The churn spec writing into a schema of its own (named after the test)."""
    import re

    from include.nightshift.spec import load_model

    base = load_model("churn")
    schema = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:30]
    return base.model_copy(update={"scoring": base.scoring.model_copy(update={"schema_name": schema})})


def write_day(spec, root: str, rows: int, bad: int = 0, seed: int = 1, row_group_size: int = 200_000) -> str:
    """A day of ``rows`` feature rows at ``root``; the first ``bad`` have tenure -1 (out of range)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cols = {spec.entity_key: np.arange(rows, dtype=np.int64)}
    for f in spec.features:
        if f.type == "category":
            cols[f.name] = np.array(f.categories)[rng.integers(0, len(f.categories), rows)]
        else:
            v = rng.uniform(f.min or 0, (f.max or 100) / 4, rows)
            cols[f.name] = np.floor(v).astype(np.int64) if f.type == "int" else v
    cols["tenure_months"][:bad] = -1
    uri = spec.landing.features(root, DAY.isoformat())
    path = uri.removeprefix("file://")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return uri


def score_day(conn, qconn, spec, model, uri: str, run_id: str, version: int = 1):
    """The scoring DAG's steps, in-process: claim, score every shard, assemble, publish."""
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    tables = warehouse.ensure_tables(conn, spec)
    total, shards = scoring.inspect_input(Storage(), spec, uri)
    lease = warehouse.claim(conn, tables, DAY, run_id, 30)
    consts = warehouse.Constants(DAY, spec.name, version, "mlflowrun", run_id)
    results = [
        scoring.score_shard(
            conn, qconn, scoring.ShardJob(spec, tables, consts, Storage(), uri, s, model), lease.heartbeat
        )
        for s in shards
    ]
    staged = warehouse.assemble(conn, tables, consts, len(shards))
    warehouse.publish(conn, lease, consts, staged, len(shards))
    return total, results


def day_state(conn, spec) -> tuple[int, set]:
    with conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*), array_agg(DISTINCT dag_run_id) FROM {spec.scoring.schema_name}.churn_scores "
            "WHERE score_date = %s",
            (DAY,),
        )
        n, runs = cur.fetchone()
    return n, set(runs or [])


def staging_left(conn, spec) -> list[str]:
    from include.nightshift import warehouse

    return warehouse.staging_tables(conn, warehouse.Tables.for_spec(spec), DAY)


def staged_rows(conn, spec, table: str) -> int:
    from include.nightshift import warehouse

    return warehouse.count_rows(conn, f"{spec.scoring.schema_name}_staging", table)


def test_shards_are_assembled_into_one_day(spec, model, connect, tmp_path):
    spec = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"shard_rows": 200_000})})
    uri = write_day(spec, tmp_path.as_uri(), 500_000, bad=7)
    conn, qconn = connect(), connect()

    total, results = score_day(conn, qconn, spec, model, uri, "run-shards")

    assert len(results) == 3, "500k rows in row groups of 200k, shards of at least 200k: 200k, 200k, 100k"
    assert day_state(conn, spec) == (total - 7, {"run-shards"})
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*), min(rule) FROM {spec.scoring.schema_name}.churn_quarantine")
        assert cur.fetchone() == (7, "tenure_months between 0 and 120")
    assert staging_left(conn, spec) == []


SCORER = """
import pickle, psycopg2
from tests.integration.test_warehouse import score_day
from include.nightshift.spec import ModelSpec
spec = ModelSpec.model_validate_json(open({spec_path!r}).read())
model = pickle.load(open({model_path!r}, "rb"))
conn, qconn = psycopg2.connect({db_url!r}), psycopg2.connect({db_url!r})
score_day(conn, qconn, spec, model, {uri!r}, "run-killed", version=2)
"""


def test_sigkill_mid_load_leaves_the_old_day_and_the_retry_succeeds(spec, model, connect, db_url, tmp_path):
    import pickle

    small = write_day(spec, (tmp_path / "small").as_uri(), 1000)
    conn, qconn = connect(), connect()
    score_day(conn, qconn, spec, model, small, "run-old")
    assert day_state(conn, spec) == (1000, {"run-old"})

    big = write_day(spec, (tmp_path / "big").as_uri(), 1_500_000, seed=2)
    (tmp_path / "spec.json").write_text(spec.model_dump_json(by_alias=True))
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    script = SCORER.format(
        root=str(ROOT),
        spec_path=str(tmp_path / "spec.json"),
        model_path=str(tmp_path / "model.pkl"),
        db_url=db_url,
        uri=big,
    )
    observed: list[tuple[int, set]] = []
    stop = threading.Event()
    observer = connect()

    def observe() -> None:
        while not stop.is_set():
            observed.append(day_state(observer, spec))
            time.sleep(0.02)

    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        # Kill the writer while its COPY is streaming rows into staging.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with conn, conn.cursor() as cur:
                # (The staging table is not visible outside the writer's transaction: match by database.)
                cur.execute(
                    "SELECT max(tuples_processed) FROM pg_stat_progress_copy WHERE datname = current_database()"
                )
                row = cur.fetchone()
            if row and (row[0] or 0) > 100_000:
                break
            assert proc.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the COPY never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)
        assert day_state(conn, spec) == (1000, {"run-old"}), "the published day is untouched"

        # The retry of the same run takes its claim back and replaces the day.
        score_day(conn, qconn, spec, model, big, "run-killed", version=2)
    finally:
        stop.set()
        watcher.join()
        proc.kill()

    assert day_state(conn, spec) == (1_500_000, {"run-killed"})
    assert staging_left(conn, spec) == []
    assert len(observed) > 10, "the observer watched the whole time"
    assert all(o in ((1000, {"run-old"}), (1_500_000, {"run-killed"})) for o in observed), "never a mix"


def test_two_runs_for_one_date_cannot_interleave(spec, model, connect, tmp_path):
    from include.nightshift import warehouse
    from include.nightshift.warehouse import ScoreDateBusyError

    uri = write_day(spec, tmp_path.as_uri(), 2000)
    conn, qconn = connect(), connect()
    tables = warehouse.ensure_tables(conn, spec)
    warehouse.claim(conn, tables, DAY, "run-a", 30)

    with pytest.raises(ScoreDateBusyError) as busy:
        warehouse.claim(connect(), tables, DAY, "run-b", 30, holder_alive=lambda run: True)
    message = str(busy.value)
    assert "being written by DAG run run-a" in message and "run-b will not interleave" in message

    # run-a finishes (the same run may re-claim: that is its retry); then run-b gets the date.
    score_day(conn, qconn, spec, model, uri, "run-a")
    score_day(connect(), connect(), spec, model, uri, "run-b")
    assert day_state(conn, spec) == (2000, {"run-b"})


def test_a_claim_of_a_finished_run_is_taken_over(spec, connect):
    from include.nightshift import warehouse

    conn = connect()
    tables = warehouse.ensure_tables(conn, spec)
    warehouse.claim(conn, tables, DAY, "run-dead", 30)
    lease = warehouse.claim(conn, tables, DAY, "run-new", 30, holder_alive=lambda run: False)
    lease.heartbeat(force=True)  # it is ours now
    with pytest.raises(warehouse.ScoreDateBusyError, match="lost its claim"):
        warehouse.Lease(conn, tables, DAY, "run-dead").heartbeat(force=True)


def test_over_the_quarantine_threshold_nothing_is_published(spec, model, connect, tmp_path):
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    conn, qconn = connect(), connect()
    score_day(conn, qconn, spec, model, write_day(spec, (tmp_path / "ok").as_uri(), 1000), "run-ok")
    bad_uri = write_day(spec, (tmp_path / "bad").as_uri(), 1000, bad=50)  # 5 % > 1 %
    tables = warehouse.Tables.for_spec(spec)
    lease = warehouse.claim(conn, tables, DAY, "run-bad", 30)
    consts = warehouse.Constants(DAY, spec.name, 1, "m", "run-bad")
    _, shards = scoring.inspect_input(Storage(), spec, bad_uri)
    job = scoring.ShardJob(spec, tables, consts, Storage(), bad_uri, shards[0], model)
    result = scoring.score_shard(conn, qconn, job)
    assert result.quarantined == {"tenure_months between 0 and 120": 50}
    assert result.scored_rows + result.quarantined_rows == 1000
    assert result.examples["tenure_months between 0 and 120"] == ["0", "1", "2", "3", "4"]

    kept = warehouse.publish_quarantine_only(conn, lease, consts, len(shards))

    assert kept == 50
    assert day_state(conn, spec) == (1000, {"run-ok"}), "the published day stays"
    assert staging_left(conn, spec) == []


def test_analyst_role_reads_published_days_and_nothing_else(spec, model, connect, server, platform, tmp_path):
    import psycopg2

    from include.nightshift import warehouse

    schema = spec.scoring.schema_name
    conn, qconn = connect(), connect()
    warehouse.ensure_analyst_role(conn, spec, "analyst_test", "s3cret-analyst")
    # A day published after the grant: its partition did not exist when the role was granted.
    score_day(conn, qconn, spec, model, write_day(spec, tmp_path.as_uri(), 500), "run-after-grant")
    host = server.split("@", 1)[-1]
    analyst = connect(f"postgresql://analyst_test:s3cret-analyst@{host}/{platform.db('warehouse')}")
    analyst.autocommit = True
    part = f"churn_scores_p{DAY:%Y%m%d}"

    def run(sql: str):
        with analyst.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None

    assert run(f"SELECT count(*) FROM {schema}.churn_scores WHERE score_date = '{DAY}'") == [(500,)]
    assert run(f"SELECT count(*) FROM {schema}.{part}") == [(500,)]
    assert run(f"SELECT count(*) FROM {schema}.churn_latest_scores") == [(500,)]
    denied = [
        f"INSERT INTO {schema}.churn_scores (customer_id, score_date, score, predicted_label, model_name, "
        "model_version, mlflow_run_id, dag_run_id, scored_at) "
        "VALUES (1, '2026-11-19', 0.5, 0, 'x', 1, 'x', 'x', now())",
        f"UPDATE {schema}.churn_scores SET score = 0",
        f"DELETE FROM {schema}.churn_scores",
        f"TRUNCATE {schema}.{part}",
        f"CREATE TABLE {schema}.mine (x int)",
        f"SELECT count(*) FROM {schema}.churn_quarantine",
        f"SELECT count(*) FROM {schema}_staging.score_leases",
    ]
    for sql in denied:
        with pytest.raises((psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ReadOnlySqlTransaction)):
            run(sql)
    # Read-only even where a grant might slip: the login's sessions are read-only transactions.
    assert run("SHOW default_transaction_read_only") == [("on",)]


@pytest.mark.parametrize(
    "bad",
    ["churn; DROP TABLE x", 'churn"', "Churn", "a" * 41, "1churn"],
    ids=["injection", "quote", "upper", "long", "digit"],
)
def test_identifiers_from_config_are_validated(bad):
    from include.nightshift.warehouse import Tables

    with pytest.raises(ValueError, match="is not allowed"):
        Tables(model=bad, schema="nightshift", key="customer_id", key_type="bigint")
    with pytest.raises(ValueError, match="is not allowed"):
        Tables(model="churn", schema=bad, key="customer_id", key_type="bigint")


def test_a_model_error_mid_stream_is_raised_as_is_and_leaves_nothing(spec, model, connect, tmp_path):
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    class Exploding:
        def __init__(self):
            self.calls = 0

        def predict_proba(self, x):
            self.calls += 1
            if self.calls == 2:
                raise ValueError("model exploded on the second batch")
            return model.predict_proba(x)

    conn, qconn = connect(), connect()
    score_day(conn, qconn, spec, model, write_day(spec, (tmp_path / "ok").as_uri(), 1000), "run-ok")
    small = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"batch_rows": 1000})})
    uri = write_day(small, (tmp_path / "big").as_uri(), 5000, bad=3)
    tables = warehouse.Tables.for_spec(small)
    warehouse.claim(conn, tables, DAY, "run-x", 30)
    _, shards = scoring.inspect_input(Storage(), small, uri)
    consts = warehouse.Constants(DAY, small.name, 1, "m", "run-x")

    with pytest.raises(ValueError, match="exploded on the second batch"):
        scoring.score_shard(
            conn, qconn, scoring.ShardJob(small, tables, consts, Storage(), uri, shards[0], Exploding())
        )

    # The run's shared scores table and its ledger stay (the next shard or the retry loads them), empty;
    # the shard's quarantine table was rolled back with its rows.
    s_table, ledger = warehouse.scores_table(tables, consts), warehouse.ledger_table(tables, consts)
    assert staging_left(conn, small) == sorted([ledger, s_table])
    assert staged_rows(conn, small, s_table) == 0 and staged_rows(conn, small, ledger) == 0
    assert day_state(conn, small) == (1000, {"run-ok"})


def test_a_key_twice_in_a_day_fails_at_assemble_and_publishes_nothing(spec, model, connect, tmp_path):
    """The output suite no longer checks key uniqueness: the staged table's primary key must catch it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.errors import DataValidationError

    spec = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"shard_rows": 200_000})})
    uri = write_day(spec, tmp_path.as_uri(), 400_000)
    path = uri.removeprefix("file://")
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(0, 3)]), path, row_group_size=200_000)
    conn, qconn = connect(), connect()
    from include.nightshift import warehouse

    warehouse.ensure_tables(conn, spec)
    before = day_state(conn, spec)

    with pytest.raises(DataValidationError, match="duplicate customer_id values"):
        score_day(conn, qconn, spec, model, uri, "run-duplicates")

    assert day_state(conn, spec) == before


# One scores staging table per run and day, loaded by every shard: concurrent shards, retries.


def small_shards(spec, root: str, rows: int = 20_000, bad: int = 0):
    """``spec`` with shards of 10,000 rows in batches of 1,000, and a day of ``rows`` in row groups of 10,000."""
    update = {"shard_rows": 10_000, "batch_rows": 1000}
    spec = spec.model_copy(update={"scoring": spec.scoring.model_copy(update=update)})
    return spec, write_day(spec, root, rows, bad=bad, row_group_size=10_000)


def start_run(conn, spec, uri: str, run_id: str):
    """What resolve_run does: the tables, the claim, the run's constants and the day's shards."""
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    tables = warehouse.ensure_tables(conn, spec)
    total, shards = scoring.inspect_input(Storage(), spec, uri)
    lease = warehouse.claim(conn, tables, DAY, run_id, 30)
    return tables, warehouse.Constants(DAY, spec.name, 1, "m", run_id), lease, total, shards


def copies_into(conn, spec, table: str) -> list[int]:
    """Rows processed by each COPY running now into the staging table ``table``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT tuples_processed FROM pg_stat_progress_copy WHERE relid = to_regclass(%s)",
            (f"{spec.scoring.schema_name}_staging.{table}",),
        )
        return [r[0] for r in cur.fetchall()]


def wait_for(what: str, check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.05)


class Gated:
    """The model, whose second batch waits until ``gate`` is set (the shard's COPY is open by then)."""

    def __init__(self, model, gate: threading.Event):
        self.model, self.gate, self.calls = model, gate, 0

    def predict_proba(self, x):
        self.calls += 1
        if self.calls == 2 and not self.gate.wait(60):
            raise TimeoutError("the gate was never opened")
        return self.model.predict_proba(x)


class Untouchable:
    def predict_proba(self, x):
        raise AssertionError("a shard whose scores committed was scored again")


def in_threads(*calls):
    """Start every call in a thread of its own; returns (threads, results by position, errors)."""
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    return threads, results, errors


def test_two_shards_loading_at_once_into_the_one_table_assemble_every_row_once(spec, model, connect, tmp_path):
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    spec, uri = small_shards(spec, tmp_path.as_uri(), 20_000, bad=5)
    conn = connect()
    tables, consts, lease, total, shards = start_run(conn, spec, uri, "run-parallel")
    assert len(shards) == 2
    gate = threading.Event()

    def shard(s):
        job = scoring.ShardJob(spec, tables, consts, Storage(), uri, s, Gated(model, gate))
        return lambda: scoring.score_shard(connect(), connect(), job)

    threads, results, errors = in_threads(*(shard(s) for s in shards))
    try:
        # Both shards create the table if it is not there (at the same moment), then both COPYs run at once.
        s_table = warehouse.scores_table(tables, consts)
        wait_for("two COPYs into the one table", lambda: len(copies_into(conn, spec, s_table)) == 2 or errors)
        assert not errors, errors
    finally:
        gate.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert sorted(r.shard for r in results.values()) == [0, 1]

    day = scoring.assemble_day(conn, lease, spec, consts, total, list(results.values()))
    warehouse.publish(conn, lease, consts, day.staged_table, day.shards)

    assert (day.scored_rows, day.quarantined_rows) == (total - 5, 5)
    assert day_state(conn, spec) == (total - 5, {"run-parallel"})
    with conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT count(DISTINCT customer_id), min(customer_id), max(customer_id) FROM "
            f"{spec.scoring.schema_name}.churn_scores WHERE score_date = %s",
            (DAY,),
        )
        assert cur.fetchone() == (total - 5, 5, total - 1), "every row once"
        cur.execute(f"SELECT count(*) FROM {spec.scoring.schema_name}.churn_quarantine")
        assert cur.fetchone() == (5,)
    assert staging_left(conn, spec) == []


def test_a_shard_run_again_after_its_scores_committed_loads_nothing_twice(spec, model, connect, tmp_path, caplog):
    import dataclasses
    import logging

    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    spec, uri = small_shards(spec, tmp_path.as_uri(), 20_000, bad=5)
    conn, qconn = connect(), connect()
    tables, consts, lease, total, shards = start_run(conn, spec, uri, "run-retry")
    jobs = [scoring.ShardJob(spec, tables, consts, Storage(), uri, s, model) for s in shards]
    first = [scoring.score_shard(conn, qconn, job) for job in jobs]
    s_table, q0 = warehouse.scores_table(tables, consts), tables.staging(DAY, "run-retry", "q0")
    assert first[0].quarantined_rows == 5 and staged_rows(conn, spec, q0) == 5

    # Shard 0's task is retried after its commit (say the worker died before reporting success).
    with caplog.at_level(logging.INFO, logger="include.nightshift.scoring.shard"):
        again = scoring.score_shard(conn, qconn, dataclasses.replace(jobs[0], model=Untouchable()))

    assert again == first[0], "the stored result: the same counts, rules and examples"
    assert "shard 0 was loaded by an earlier try" in caplog.text
    assert staged_rows(conn, spec, s_table) == total - 5, "no row twice"
    assert staged_rows(conn, spec, q0) == 5, "its quarantine table untouched"

    day = scoring.assemble_day(conn, lease, spec, consts, total, [again, first[1]])
    assert (day.scored_rows, day.quarantined_rows) == (total - 5, 5)
    # The assemble task cleared after it succeeded: runs again, changes nothing.
    assert warehouse.assemble(conn, tables, consts, len(shards)) == day.staged_table
    # A shard cleared after assemble (the keyed table must not get its rows again): the stored result.
    late = scoring.score_shard(conn, qconn, dataclasses.replace(jobs[1], model=Untouchable()))
    assert late == first[1] and staged_rows(conn, spec, s_table) == total - 5
    warehouse.publish(conn, lease, consts, day.staged_table, day.shards)
    assert day_state(conn, spec) == (total - 5, {"run-retry"})
    assert staging_left(conn, spec) == [], "the publish dropped the ledger with the rest"


def test_a_second_attempt_of_a_shard_while_the_first_loads_waits_and_returns_its_result(spec, model, connect, tmp_path):
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    spec, uri = small_shards(spec, tmp_path.as_uri(), 20_000)
    conn = connect()
    tables, consts, lease, total, shards = start_run(conn, spec, uri, "run-twice")
    gate = threading.Event()
    s_table = warehouse.scores_table(tables, consts)
    first = scoring.ShardJob(spec, tables, consts, Storage(), uri, shards[0], Gated(model, gate))
    second = scoring.ShardJob(spec, tables, consts, Storage(), uri, shards[0], Untouchable())

    threads, results, errors = in_threads(lambda: scoring.score_shard(connect(), connect(), first))
    try:
        wait_for("the first attempt's COPY", lambda: len(copies_into(conn, spec, s_table)) == 1 or errors)
        more, more_results, more_errors = in_threads(lambda: scoring.score_shard(connect(), connect(), second))
        threads += more

        def second_waits() -> bool:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO%'"
                )
                return cur.fetchone()[0] == 1 or bool(more_errors)

        wait_for("the second attempt to wait on the shard's ledger row", second_waits)
        assert not more_errors, more_errors
    finally:
        gate.set()
        for t in threads:
            t.join()
    assert not errors and not more_errors, errors + more_errors
    assert more_results[0] == results[0]
    assert staged_rows(conn, spec, s_table) == shards[0].rows


def test_a_shard_failing_mid_copy_leaves_none_of_its_rows_and_its_retry_completes_the_day(
    spec, model, connect, tmp_path
):
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    conn, qconn = connect(), connect()
    score_day(conn, qconn, spec, model, write_day(spec, (tmp_path / "ok").as_uri(), 1000), "run-ok")
    spec, uri = small_shards(spec, (tmp_path / "big").as_uri(), 20_000, bad=5)
    tables, consts, lease, total, shards = start_run(conn, spec, uri, "run-fail")
    s_table, ledger = warehouse.scores_table(tables, consts), warehouse.ledger_table(tables, consts)
    observer = connect()

    class MidCopy:
        """Fails on the third batch, once the first batch's rows went into the shared table."""

        def __init__(self):
            self.calls = 0

        def predict_proba(self, x):
            self.calls += 1
            if self.calls == 3:
                wait_for("rows of the failing shard in COPY", lambda: max(copies_into(observer, spec, s_table)) >= 1000)
                raise ValueError("model exploded mid-COPY")
            return model.predict_proba(x)

    def job(shard, m):
        return scoring.ShardJob(spec, tables, consts, Storage(), uri, shard, m)

    done = scoring.score_shard(conn, qconn, job(shards[0], model))
    with pytest.raises(ValueError, match="exploded mid-COPY"):
        scoring.score_shard(conn, qconn, job(shards[1], MidCopy()))

    assert staged_rows(conn, spec, s_table) == done.scored_rows == shards[0].rows - 5, "shard 0's rows stay"
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {spec.scoring.schema_name}_staging.{s_table} WHERE customer_id >= 10000")
        assert cur.fetchone() == (0,), "none of shard 1's rows"
        cur.execute(f"SELECT shard FROM {spec.scoring.schema_name}_staging.{ledger}")
        assert cur.fetchall() == [(0,)]
    assert tables.staging(DAY, "run-fail", "q1") not in staging_left(conn, spec)
    assert day_state(conn, spec) == (1000, {"run-ok"}), "the published day is unchanged"

    retry = scoring.score_shard(conn, qconn, job(shards[1], model))
    day = scoring.assemble_day(conn, lease, spec, consts, total, [done, retry])
    warehouse.publish(conn, lease, consts, day.staged_table, day.shards)

    assert day_state(conn, spec) == (total - 5, {"run-fail"})
    assert staging_left(conn, spec) == []


# The suites run beside the work they judge: giving the date back must not wait on that work forever.


def test_the_date_given_back_while_a_shard_loads_stops_the_shard_and_drops_its_table(spec, model, connect, tmp_path):
    """The input suite fails while a shard beside it is mid-COPY (the shard renews the claim every batch)."""
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    conn, qconn = connect(), connect()
    score_day(conn, qconn, spec, model, write_day(spec, (tmp_path / "ok").as_uri(), 1000), "run-ok")
    spec, uri = small_shards(spec, (tmp_path / "big").as_uri(), 10_000)
    tables, consts, _, _, shards = start_run(conn, spec, uri, "run-bad-input")
    s_table = warehouse.scores_table(tables, consts)
    gate, observer = threading.Event(), connect()
    shard_lease = warehouse.Lease(connect(), tables, DAY, "run-bad-input", interval=0)
    job = scoring.ShardJob(spec, tables, consts, Storage(), uri, shards[0], Gated(model, gate))
    (shard,), _, shard_errors = in_threads(
        lambda: scoring.score_shard(connect(), connect(), job, shard_lease.heartbeat)
    )
    wait_for("the shard's COPY", lambda: bool(copies_into(observer, spec, s_table)))

    suite_side = warehouse.Lease(connect(), tables, DAY, "run-bad-input")
    (release,), _, release_errors = in_threads(suite_side.release)
    wait_for("the claim given back", lambda: warehouse.given_back(observer, tables, DAY))
    gate.set()  # the shard's next batch renews the claim and finds it gone
    shard.join(30)
    release.join(30)

    assert not shard.is_alive() and not release.is_alive(), "neither waits on the other"
    assert release_errors == []
    assert [type(e) for e in shard_errors] == [warehouse.DateGivenBackError]
    assert "gave the date back" in str(shard_errors[0])
    assert staging_left(conn, spec) == [], "the release dropped the day's staging tables once the shard let go"
    assert day_state(conn, spec) == (1000, {"run-ok"}), "the published day is unchanged"


def test_the_key_build_lets_the_output_suite_read_and_waits_only_to_record_the_key(spec, model, connect, tmp_path):
    """The output suite reads the staged table while assemble builds its key; only the last step waits on it."""
    from include.nightshift import scoring, warehouse
    from include.nightshift.storage import Storage

    conn, qconn = connect(), connect()
    spec, uri = small_shards(spec, tmp_path.as_uri(), 20_000)
    tables, consts, lease, total, shards = start_run(conn, spec, uri, "run-beside")
    results = [
        scoring.score_shard(conn, qconn, scoring.ShardJob(spec, tables, consts, Storage(), uri, s, model))
        for s in shards
    ]
    s_table = warehouse.scores_table(tables, consts)
    reader = connect()
    with reader.cursor() as cur:  # a suite query in flight: its transaction holds the table's read lock
        cur.execute(f"SELECT count(*) FROM {spec.scoring.schema_name}_staging.{s_table}")
        assert cur.fetchone() == (total,)
    assembler = connect()
    (build,), built, errors = in_threads(lambda: scoring.assemble_day(assembler, lease, spec, consts, total, results))
    observer = connect()

    def waits_to_record_the_key() -> bool:
        with observer, observer.cursor() as cur:
            cur.execute(
                "SELECT query FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (assembler.get_backend_pid(),),
            )
            row = cur.fetchone()
        return bool(row) and "PRIMARY KEY USING INDEX" in row[0]

    wait_for("the index built beside the reader", waits_to_record_the_key)
    reader.commit()
    build.join(30)

    assert errors == [] and not build.is_alive()
    assert built[0].staged_table == s_table
    warehouse.publish(conn, lease, consts, s_table, len(shards))
    assert day_state(conn, spec) == (total, {"run-beside"})
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_default FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s AND column_name = 'model_version'",
            (spec.scoring.schema_name, tables.partition(DAY)),
        )
        assert cur.fetchone() == (None,), "the partition keeps none of the staging table's defaults"
