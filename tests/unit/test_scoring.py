"""Scoring without a database: shards, row rules, COPY encodings, input checks, the suites."""

from __future__ import annotations

import struct
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.nightshift import scoring
from include.nightshift.errors import DataValidationError, MissingPartitionError, SpecError
from include.nightshift.storage import Storage

pytestmark = pytest.mark.unit

DAY = date(2026, 11, 20)


@pytest.mark.parametrize(
    ("groups", "shard_rows", "expected"),
    [
        pytest.param([100], 1000, [((0,), 100)], id="one-small-group"),
        pytest.param([500, 500, 500], 1000, [((0, 1), 1000), ((2,), 500)], id="groups-joined"),
        pytest.param([3000], 1000, [((0,), 3000)], id="a-group-is-never-split"),
        pytest.param([1000, 1000], 1000, [((0,), 1000), ((1,), 1000)], id="exact"),
    ],
)
def test_plan_shards(groups, shard_rows, expected):
    assert scoring.plan_shards(groups, shard_rows, slots=1) == scoring.plan_shards(groups, shard_rows)
    shards = scoring.plan_shards(groups, shard_rows)
    assert [(s.row_groups, s.rows) for s in shards] == expected
    assert [s.index for s in shards] == list(range(len(expected)))
    assert {s.of for s in shards} == {len(expected)}, "each shard knows how many the day has"
    assert scoring.Shard.from_dict(shards[0].as_dict()) == shards[0]


@pytest.mark.parametrize(
    ("groups", "slots", "sizes"),
    [
        # 10M rows, 2M shards, 2 slots: 6 shards (3 full waves) instead of 5 (the last wave half idle).
        pytest.param([250_000] * 40, 2, [1_750_000, 1_750_000, 1_500_000, 1_750_000, 1_750_000, 1_500_000], id="10M"),
        pytest.param([250_000] * 40, 1, [2_000_000] * 5, id="10M-one-slot"),
        pytest.param([250_000] * 4, 2, [1_000_000], id="one-shard-stays-one"),
        pytest.param([250_000] * 12, 4, [750_000] * 4, id="3M-four-slots"),
    ],
)
def test_plan_shards_fills_every_slot_of_the_last_wave(groups, slots, sizes):
    shards = scoring.plan_shards(groups, 2_000_000, slots)
    assert [s.rows for s in shards] == sizes
    assert [g for s in shards for g in s.row_groups] == list(range(len(groups)))


def _batch(spec, **overrides):
    rows = {
        "customer_id": [1, 2, 3],
        "tenure_months": [5, 6, 7],
        "monthly_charges": [10.0, 20.0, 30.0],
        "total_charges": [100.0, None, 300.0],
        "support_calls_30d": [0, 1, 2],
        "data_usage_gb": [1.0, 2.0, None],
        "contract_type": ["one-year", "two-year", "month-to-month"],
        "payment_method": ["card", None, "voucher"],
        "region": ["north", "south", "east"],
    }
    rows.update(overrides)
    return pa.RecordBatch.from_pydict(rows)


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        pytest.param({"customer_id": [None, 2, 3]}, "customer_id not null", id="null-key"),
        pytest.param({"tenure_months": [None, 6, 7]}, "tenure_months not null", id="null-feature"),
        pytest.param({"tenure_months": [-1, 6, 7]}, "tenure_months between 0 and 120", id="below-min"),
        pytest.param({"monthly_charges": [10_000.0, 20.0, 30.0]}, "monthly_charges between 0 and 500", id="above-max"),
        pytest.param({"monthly_charges": [float("nan"), 20.0, 30.0]}, "monthly_charges not null", id="nan-is-null"),
        pytest.param({"data_usage_gb": [float("inf"), 2.0, None]}, "data_usage_gb finite", id="infinite"),
        pytest.param(
            {"region": ["atlantis", "south", "east"]}, "region in [north, south, east, west, central]", id="category"
        ),
    ],
)
def test_a_row_breaking_a_rule_is_set_aside_with_it(spec, overrides, rule):
    good, bad, rules = scoring.split_batch(_batch(spec, **overrides), scoring.row_rules(spec))

    assert good.column("customer_id").to_pylist() == [2, 3]
    assert bad.num_rows == 1
    assert rules.to_pylist() == [rule]


def test_clean_rows_pass_and_nullable_features_may_be_null(spec):
    batch = _batch(spec)
    good, bad, rules = scoring.split_batch(batch, scoring.row_rules(spec))
    assert good.num_rows == 3 and bad is None and rules is None


def test_a_row_is_quarantined_under_the_first_rule_it_breaks(spec):
    batch = _batch(spec, customer_id=[None, 2, 3], tenure_months=[-1, 6, 7])
    _, _, rules = scoring.split_batch(batch, scoring.row_rules(spec))
    assert rules.to_pylist() == ["customer_id not null"]


def test_binary_copy_rows_decode_to_the_scores():
    keys = pa.array([7, -1, 2**40], pa.int64())
    scores = np.array([0.1, 0.35, 0.9])

    data = scoring.scores_binary(keys, scores, threshold=0.35)

    rows = [struct.unpack(">hiqidih", data[i : i + 32]) for i in range(0, len(data), 32)]
    assert len(data) == 32 * 3
    assert rows == [(3, 8, 7, 8, 0.1, 2, 0), (3, 8, -1, 8, 0.35, 2, 1), (3, 8, 2**40, 8, 0.9, 2, 1)]
    assert scoring.COPY_BINARY_HEADER.startswith(b"PGCOPY\n\xff\r\n\x00") and len(scoring.COPY_BINARY_HEADER) == 19


def test_csv_copy_rows_for_text_keys():
    data = scoring.scores_csv(pa.array(["a,1", "b"]), np.array([0.25, 0.75]), threshold=0.5)
    assert data.decode().splitlines() == ['"a,1",0.25,0', '"b",0.75,1']


def test_quarantine_rows_carry_the_rule_and_the_values(spec):
    batch = _batch(spec, tenure_months=[-1, 6, 7])
    _, bad, rules = scoring.split_batch(batch, scoring.row_rules(spec))

    line = scoring.quarantine_csv(spec, bad, rules).decode().strip()

    assert line.startswith('"1","tenure_months between 0 and 120","{')
    assert '""tenure_months"":-1' in line


def _write(path, table, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)
    return path.as_uri()


def test_inspect_input_plans_shards_from_row_groups(spec, tmp_path):
    table = pa.Table.from_batches([_batch(spec)] * 4)
    uri = _write(tmp_path / "day.parquet", table, row_group_size=3)
    small = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"shard_rows": 10_000})})

    total, shards = scoring.inspect_input(Storage(), small, uri)

    assert total == 12
    assert [s.rows for s in shards] == [12] and shards[0].row_groups == (0, 1, 2, 3)


def test_missing_input_names_the_file(spec, tmp_path):
    uri = (tmp_path / "nope" / "part-0.parquet").as_uri()
    with pytest.raises(MissingPartitionError, match=r"nope/part-0.parquet does not exist.*left as they were"):
        scoring.inspect_input(Storage(), spec, uri)


def test_empty_input_is_refused(spec, tmp_path):
    uri = _write(tmp_path / "day.parquet", pa.Table.from_batches([_batch(spec)]).slice(0, 0))
    with pytest.raises(DataValidationError, match="has 0 rows"):
        scoring.inspect_input(Storage(), spec, uri)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda t: t.drop_columns(["region"]), "column 'region' is missing", id="missing-column"),
        pytest.param(
            lambda t: t.set_column(1, "tenure_months", pa.array(["5", "6", "7"])),
            "column 'tenure_months' has type string",
            id="wrong-type",
        ),
        pytest.param(
            lambda t: t.set_column(0, "customer_id", pa.array(["a", "b", "c"])),
            "scoring.entity_key_type is bigint",
            id="text-key-for-bigint-table",
        ),
    ],
)
def test_input_with_the_wrong_schema_is_refused(spec, tmp_path, change, message):
    uri = _write(tmp_path / "day.parquet", change(pa.Table.from_batches([_batch(spec)])))
    with pytest.raises(DataValidationError, match=message):
        scoring.inspect_input(Storage(), spec, uri)


def test_the_input_suite_reads_an_even_sample_of_a_large_day(spec, tmp_path):
    n = 20_000
    table = pa.table({"customer_id": np.arange(n), "tenure_months": np.zeros(n, dtype=np.int64)})
    uri = _write(tmp_path / "day.parquet", table)

    small = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"batch_rows": 1000})})
    frame = scoring.read_sample(Storage(), small, uri, DAY, max_rows=5000)

    assert 4000 <= len(frame) <= 5000
    assert frame["customer_id"].max() > 15_000, "spread over the day, not its head"
    assert set(frame["source_file"]) == {uri}
    assert len(scoring.read_sample(Storage(), small, uri, DAY, max_rows=50_000)) == n


def test_a_day_of_many_row_groups_is_sampled_from_every_group(spec, tmp_path):
    n = 40_000
    table = pa.table({"customer_id": np.arange(n), "tenure_months": np.zeros(n, dtype=np.int64)})
    uri = _write(tmp_path / "day.parquet", table, row_group_size=2_000)  # 20 row groups

    frame = scoring.read_sample(Storage(), spec, uri, DAY, max_rows=4_000)

    assert len(frame) == 4_000
    assert sorted(set(frame["customer_id"] // 2_000)) == list(range(20)), "rows of every row group"
    assert frame["customer_id"].is_unique


def test_the_input_suite_tolerates_what_quarantine_takes(spec):
    from include.nightshift.validation import derived_expectations

    exps = derived_expectations(spec, "scoring_input")
    tenure = next(
        e
        for e in exps
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "tenure_months"
    )
    assert tenure["kwargs"]["mostly"] == pytest.approx(1 - spec.scoring.max_quarantine_fraction)
    raw = derived_expectations(spec, "raw_features")
    assert (
        next(e for e in raw if e["kwargs"].get("column") == "tenure_months" and "min_value" in e["kwargs"])["kwargs"][
            "mostly"
        ]
        == 1.0
    )


def test_the_output_suite_pins_rows_version_and_run(spec):
    from include.nightshift.validation import derived_expectations

    exps = derived_expectations(spec, "scored_output", expected={"rows": 42, "model_version": "3", "dag_run_id": "r"})
    by_type = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in exps}
    assert by_type[("expect_table_row_count_to_equal", None)]["value"] == 42
    assert by_type[("expect_column_values_to_be_in_set", "model_version")]["value_set"] == [3]
    assert by_type[("expect_column_values_to_be_in_set", "dag_run_id")]["value_set"] == ["r"]
    assert by_type[("expect_column_values_to_be_between", "score")] == {
        "column": "score",
        "min_value": 0,
        "max_value": 1,
    }
    # The staged table's primary key (customer_id, score_date) guarantees these: not scanned again by GX.
    assert ("expect_column_values_to_be_unique", "customer_id") not in by_type
    assert ("expect_column_values_to_not_be_null", "customer_id") not in by_type


@pytest.mark.parametrize(
    ("scoring_yaml", "message"),
    [
        pytest.param({"schema": "Bad-Schema"}, "scoring.schema 'Bad-Schema' is not allowed", id="schema"),
        pytest.param({"max_quarantine_fraction": 1.5}, "max_quarantine_fraction", id="fraction"),
        pytest.param({"entity_key_type": "uuid"}, "entity_key_type", id="key-type"),
        pytest.param({"batch_rows": 10}, "batch_rows", id="batch"),
    ],
)
def test_bad_scoring_settings_name_the_key(tmp_path, scoring_yaml, message):
    import yaml

    from include.nightshift.spec import DEFAULT_MODELS_DIR, load_spec

    raw = yaml.safe_load((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    raw["scoring"] = scoring_yaml
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


@pytest.mark.parametrize(
    ("slots", "shards", "setting", "cores", "expected"),
    [
        (2, 6, None, 2, 1),
        (2, 2, None, 8, 4),
        (4, 4, None, 2, 1),
        (2, 1, None, 2, 2),
        (4, 2, None, 8, 4),
        (2, 2, 3, 2, 3),
    ],
)
def test_a_shard_model_gets_its_share_of_the_cores(spec, monkeypatch, slots, shards, setting, cores, expected):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    scoring_ = spec.scoring.model_copy(update={"shard_slots": slots, "model_threads": setting})

    assert scoring.model_threads(spec.model_copy(update={"scoring": scoring_}), shards) == expected


@pytest.mark.parametrize("threads", [1, None])
def test_the_thread_limit_reaches_the_thread_that_predicts(spec, tmp_path, threads):
    """OpenMP's thread count is per thread: the limit must hold where the model runs, not in the caller."""
    import threading

    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    from include.nightshift import warehouse
    from include.nightshift.scoring.shard import _Producer

    seen = []

    class Model:
        def predict_proba(self, x):
            seen.append(_openmp_effective_n_threads())
            return np.tile([0.5, 0.5], (len(x), 1))

    uri = _write(tmp_path / "day.parquet", pa.Table.from_batches([_batch(spec)]))
    _, shards = scoring.inspect_input(Storage(), spec, uri)
    tables = warehouse.Tables.for_spec(spec)
    job = scoring.ShardJob(spec, tables, None, Storage(), uri, shards[0], Model(), threads=threads)
    producer = _Producer(job, None, None)
    worker = threading.Thread(target=producer.run)  # as score_shard runs it: not in the caller's thread
    worker.start()
    worker.join()

    assert not producer.failure
    assert seen == [1] if threads == 1 else seen == [_openmp_effective_n_threads()]
