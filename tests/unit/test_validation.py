"""Data validation: suites derived from the spec, per-file schema checks, and failures a person can act on.

The GX tests run real validations in an ephemeral context on frames of a few rows.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from include.nightshift import validation
from include.nightshift.datasets import DATE_COLUMN, partition_uris
from include.nightshift.errors import DataValidationError
from include.nightshift.sample import SampleOptions, generate
from include.nightshift.storage import Storage
from include.nightshift.validation import (
    SOURCE_COLUMN,
    build_suite,
    derived_expectations,
    describe_failures,
    read_stage,
    schema_problems,
    summarize,
)

pytestmark = pytest.mark.unit

URI = "file:///landing/churn/features/date=2026-01-02/part-0.parquet"
FILE_A = "file:///landing/churn/features/date=2026-01-01/part-0.parquet"
FILE_B = "file:///landing/churn/features/date=2026-01-02/part-0.parquet"


def find(exps: list[dict], type_: str, column: str) -> dict | None:
    matches = [e for e in exps if e["type"] == type_ and e["kwargs"].get("column") == column]
    assert len(matches) <= 1
    return matches[0] if matches else None


# --- derived expectations ---------------------------------------------------------------------


def test_raw_features_require_non_nullable_features_to_be_present(spec):
    exps = derived_expectations(spec, "raw_features")
    for f in spec.features:
        not_null = find(exps, "expect_column_values_to_not_be_null", f.name)
        assert (not_null is not None) == (not f.nullable), f.name
        assert find(exps, "expect_column_to_exist", f.name) is not None, f.name
    assert find(exps, "expect_column_values_to_not_be_null", spec.entity_key) is not None


def test_raw_features_check_category_value_sets(spec):
    exps = derived_expectations(spec, "raw_features")
    contract = find(exps, "expect_column_values_to_be_in_set", "contract_type")
    assert contract["kwargs"] == {
        "column": "contract_type",
        "value_set": ["month-to-month", "one-year", "two-year"],
        "mostly": 1.0,
    }
    assert find(exps, "expect_column_values_to_be_in_set", "region")["kwargs"]["value_set"] == [
        "north",
        "south",
        "east",
        "west",
        "central",
    ]


@pytest.mark.parametrize(
    ("column", "kwargs"),
    [
        pytest.param(
            "tenure_months",
            {"column": "tenure_months", "min_value": 0, "max_value": 120, "mostly": 1.0},
            id="strict-range",
        ),
        pytest.param(
            "data_usage_gb",
            {"column": "data_usage_gb", "min_value": 0, "max_value": 2000, "mostly": 0.999},
            id="range-with-mostly",
        ),
    ],
)
def test_raw_features_check_ranges(spec, column, kwargs):
    exps = derived_expectations(spec, "raw_features")
    assert find(exps, "expect_column_values_to_be_between", column)["kwargs"] == kwargs
    assert find(exps, "expect_column_values_to_be_in_type_list", column) is not None


def test_raw_features_check_keys_are_unique_per_day(spec):
    exps = derived_expectations(spec, "raw_features")
    unique = [e for e in exps if e["type"] == "expect_compound_columns_to_be_unique"]
    assert unique == [
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["customer_id", DATE_COLUMN]}}
    ]
    assert find(exps, "expect_column_values_to_be_in_set", "churned") is None  # no target in features


def test_raw_labels_check_the_target_and_no_features(spec):
    exps = derived_expectations(spec, "raw_labels")
    assert find(exps, "expect_column_values_to_be_in_set", "churned")["kwargs"] == {
        "column": "churned",
        "value_set": [0, 1],
    }
    assert find(exps, "expect_column_values_to_not_be_null", "churned") is not None
    assert all(e["kwargs"].get("column") not in spec.feature_names for e in exps)


def test_training_set_needs_min_rows_and_both_classes(spec):
    exps = derived_expectations(spec, "training_set", min_rows=2000)
    row_count = [e for e in exps if e["type"] == "expect_table_row_count_to_be_between"]
    assert row_count == [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 2000}}]
    mean = find(exps, "expect_column_mean_to_be_between", "churned")
    assert 0 < mean["kwargs"]["min_value"] < mean["kwargs"]["max_value"] < 1


# --- schema, per file -------------------------------------------------------------------------

FEATURE_TYPES = {
    "customer_id": pa.int64(),
    "tenure_months": pa.int64(),
    "monthly_charges": pa.float64(),
    "total_charges": pa.float64(),
    "support_calls_30d": pa.int64(),
    "data_usage_gb": pa.float64(),
    "contract_type": pa.string(),
    "payment_method": pa.string(),
    "region": pa.string(),
}
MISSING = object()


def features_schema(**changes) -> pa.Schema:
    types = {**FEATURE_TYPES, **changes}
    return pa.schema([(name, t) for name, t in types.items() if t is not MISSING])


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="as-written-by-the-sample"),
        pytest.param({"customer_id": pa.string()}, id="string-key"),
        pytest.param({"monthly_charges": pa.int32()}, id="int-for-float"),
        pytest.param({"total_charges": pa.null()}, id="all-null-nullable-float"),
        pytest.param({"payment_method": pa.null()}, id="all-null-nullable-category"),
        pytest.param({"region": pa.dictionary(pa.int32(), pa.string())}, id="dictionary-category"),
        pytest.param({"region": pa.large_string()}, id="large-string-category"),
        pytest.param({"extra_column": pa.bool_()}, id="extra-column-ignored"),
    ],
)
def test_schema_that_fits_the_spec_has_no_problems(spec, changes):
    assert schema_problems(spec, "raw_features", URI, features_schema(**changes)) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"monthly_charges": MISSING},
            "column 'monthly_charges' is missing (present: customer_id, tenure_months, total_charges",
            id="missing-column",
        ),
        pytest.param(
            {"tenure_months": pa.string()},
            "column 'tenure_months' has type string (string); the spec needs int",
            id="text-in-int-column",
        ),
        pytest.param(
            {"tenure_months": pa.float64()},
            "column 'tenure_months' has type double (float); the spec needs int",
            id="float-in-non-nullable-int-column",
        ),
        pytest.param(
            {"monthly_charges": pa.string()},
            "column 'monthly_charges' has type string (string); the spec needs float or int",
            id="text-in-float-column",
        ),
        pytest.param(
            {"monthly_charges": pa.null()},
            "column 'monthly_charges' has type null (null); the spec needs float or int",
            id="all-null-non-nullable",
        ),
        pytest.param(
            {"contract_type": pa.int64()},
            "column 'contract_type' has type int64 (int); the spec needs string",
            id="number-in-category-column",
        ),
        pytest.param(
            {"customer_id": pa.timestamp("s")},
            "column 'customer_id' has type timestamp[s] (timestamp[s]); the spec needs int or string",
            id="timestamp-key",
        ),
    ],
)
def test_schema_problem_names_file_column_observed_type_and_rule(spec, changes, expected):
    problems = schema_problems(spec, "raw_features", URI, features_schema(**changes))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{URI}: {expected}")


def test_every_schema_problem_of_a_file_is_listed(spec):
    schema = features_schema(monthly_charges=MISSING, region=MISSING, tenure_months=pa.string())
    problems = schema_problems(spec, "raw_features", URI, schema)
    assert len(problems) == 3
    assert all(p.startswith(f"{URI}: column '") for p in problems)


@pytest.mark.parametrize(
    ("target_type", "ok"),
    [
        pytest.param(pa.int64(), True, id="int"),
        pytest.param(pa.bool_(), True, id="bool"),
        pytest.param(pa.float64(), True, id="float"),
        pytest.param(pa.string(), False, id="string"),
    ],
)
def test_label_schema(spec, target_type, ok):
    schema = pa.schema([("customer_id", pa.int64()), ("churned", target_type)])
    problems = schema_problems(spec, "raw_labels", URI, schema)
    assert (problems == []) is ok
    if not ok:
        assert problems == [f"{URI}: column 'churned' has type string (string); the spec needs bool or float or int"]


# --- reading a stage --------------------------------------------------------------------------


def features_frame(n: int = 3, start_id: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(range(start_id, start_id + n)),
            "tenure_months": [12] * n,
            "monthly_charges": [50.0] * n,
            "total_charges": [600.0] * n,
            "support_calls_30d": [1] * n,
            "data_usage_gb": [10.0] * n,
            "contract_type": ["one-year"] * n,
            "payment_method": ["card"] * n,
            "region": ["north"] * n,
        }
    )


@pytest.fixture
def landing_files(tmp_path, spec):
    """Three days of features: the first is fine, the second lacks a column, the third has text in a number."""
    storage = Storage()
    days = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]
    uris = partition_uris(spec, tmp_path.as_uri(), days, "features")
    storage.write_parquet(features_frame(), uris[days[0]])
    storage.write_parquet(features_frame().drop(columns=["region"]), uris[days[1]])
    storage.write_parquet(features_frame().astype({"tenure_months": str}), uris[days[2]])
    return days, uris


def test_read_stage_lists_every_file_with_a_bad_schema(spec, landing_files):
    days, uris = landing_files

    with pytest.raises(DataValidationError) as exc:
        read_stage(Storage(), spec, "raw_features", uris)

    message = str(exc.value)
    assert "suite churn_raw_features: 2 schema problem(s)" in message
    assert f"{uris[days[1]]}: column 'region' is missing" in message
    assert f"{uris[days[2]]}: column 'tenure_months' has type string (string); the spec needs int" in message
    assert uris[days[0]] not in message


def test_read_stage_concatenates_good_files_with_source_and_date(tmp_path, spec):
    storage = Storage()
    days = [date(2026, 1, 5), date(2026, 1, 1)]
    uris = partition_uris(spec, tmp_path.as_uri(), days, "features")
    storage.write_parquet(features_frame(2, start_id=10), uris[days[0]])
    storage.write_parquet(features_frame(3), uris[days[1]])

    df = read_stage(storage, spec, "raw_features", uris)

    # In date order, each row tagged with the file it came from and the partition's date.
    assert df["customer_id"].tolist() == [1, 2, 3, 10, 11]
    assert df[SOURCE_COLUMN].tolist() == [uris[days[1]]] * 3 + [uris[days[0]]] * 2
    assert df[DATE_COLUMN].tolist() == [pd.Timestamp(days[1])] * 3 + [pd.Timestamp(days[0])] * 2


# --- suites and real GX validations -----------------------------------------------------------


@pytest.fixture(scope="module")
def gx_validate():
    """Validate a frame with a suite in an ephemeral GX context; returns ``describe_dict()``."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("unit").add_dataframe_asset("frame")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def validate(df: pd.DataFrame, suite) -> dict:
        batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, result_format=validation.result_format()).describe_dict()

    return validate


def raw_frame(*files: str) -> pd.DataFrame:
    """Two clean rows per file, as read_stage returns them."""
    frames = []
    for i, uri in enumerate(files):
        df = features_frame(2, start_id=1 + 10 * i)
        df[SOURCE_COLUMN] = uri
        df[DATE_COLUMN] = pd.Timestamp(date(2026, 1, 1) + timedelta(days=i))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def features_suite(spec, tmp_path_factory):
    return build_suite(spec, "raw_features", gx_dir=tmp_path_factory.mktemp("no_gx"))


def test_clean_frame_passes_the_derived_suite(gx_validate, features_suite):
    result = gx_validate(raw_frame(FILE_A, FILE_B), features_suite)
    assert result["success"], describe_failures(result)
    assert describe_failures(result) == []
    assert summarize(result)["success"] is True


def test_failures_name_rule_column_value_and_file(gx_validate, features_suite):
    df = raw_frame(FILE_A, FILE_B)
    df.loc[2, "tenure_months"] = 500  # first row of FILE_B
    df.loc[1, "contract_type"] = "lifetime"  # second row of FILE_A

    result = gx_validate(df, features_suite)
    lines = describe_failures(result)

    assert not result["success"]
    assert len(lines) == 2, lines
    (range_line,) = [x for x in lines if x.startswith("expect_column_values_to_be_between(")]
    (set_line,) = [x for x in lines if x.startswith("expect_column_values_to_be_in_set(")]
    assert "column=tenure_months" in range_line and "max_value=120" in range_line
    assert "1 of 4 rows break it (25.00%), e.g. [500]" in range_line
    assert range_line.endswith(f"in {FILE_B}")
    assert "column=contract_type" in set_line
    assert "e.g. ['lifetime']" in set_line
    assert set_line.endswith(f"in {FILE_A}")
    assert summarize(result)["failures"] == lines
    assert summarize(result)["statistics"]["unsuccessful_expectations"] == 2


def test_nulls_in_a_required_feature_fail(gx_validate, features_suite):
    df = raw_frame(FILE_A, FILE_B)
    df["region"] = df["region"].astype(object)
    df.loc[3, "region"] = None

    lines = describe_failures(gx_validate(df, features_suite))

    assert any(
        line.startswith("expect_column_values_to_not_be_null(column=region)") and FILE_B in line for line in lines
    ), lines


def test_generated_partitions_validate_and_a_bad_day_is_named(gx_validate, tmp_path, spec, features_suite):
    good_day, bad_day = date(2026, 2, 1), date(2026, 2, 2)
    root = tmp_path.as_uri()
    opts = SampleOptions(start=good_day, end=bad_day, rows_per_day=200, population=2000, bad_dates=(bad_day,))
    generate(spec, root, opts)
    uris = partition_uris(spec, root, [good_day, bad_day], "features")

    clean = gx_validate(read_stage(Storage(), spec, "raw_features", {good_day: uris[good_day]}), features_suite)
    broken = gx_validate(read_stage(Storage(), spec, "raw_features", uris), features_suite)

    assert clean["success"], describe_failures(clean)
    lines = describe_failures(broken)
    assert len(lines) == 1, lines
    assert "column=tenure_months" in lines[0]
    assert "e.g. [-5]" in lines[0]
    assert uris[bad_day] in lines[0] and uris[good_day] not in lines[0]


def test_training_set_suite(gx_validate, small_spec, tmp_path):
    suite = build_suite(small_spec, "training_set", gx_dir=tmp_path)
    rows = small_spec.training.min_training_rows
    df = features_frame(rows)
    df[DATE_COLUMN] = pd.Timestamp("2026-01-01")
    df["churned"] = [int(i % 5 == 0) for i in range(rows)]

    assert gx_validate(df, suite)["success"]
    all_negative = gx_validate(df.assign(churned=0), suite)
    assert any(
        line.startswith("expect_column_mean_to_be_between(column=churned") for line in describe_failures(all_negative)
    )
    too_small = describe_failures(gx_validate(df.head(50), suite))
    assert too_small == ["expect_table_row_count_to_be_between(min_value=200): observed 50"]


# --- hand-written expectations ----------------------------------------------------------------

HANDWRITTEN = {
    "name": "churn_raw_features",
    "expectations": [
        {
            "type": "expect_column_mean_to_be_between",
            "kwargs": {"column": "monthly_charges", "min_value": 20, "max_value": 200},
            "meta": {"notes": "a mean bill above 200 EUR means the extract is in cents"},
        }
    ],
}


@pytest.fixture
def gx_dir(tmp_path):
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "churn_raw_features.json").write_text(json.dumps(HANDWRITTEN))
    return tmp_path


def test_hand_written_expectations_are_added_to_the_derived_ones(spec, gx_dir):
    suite = build_suite(spec, "raw_features", gx_dir=gx_dir)
    derived = derived_expectations(spec, "raw_features")

    assert suite.name == "churn_raw_features"
    assert len(suite.expectations) == len(derived) + 1
    last = suite.expectations[-1]
    assert last.expectation_type == "expect_column_mean_to_be_between"
    assert last.column == "monthly_charges"
    assert last.meta["notes"] == "a mean bill above 200 EUR means the extract is in cents"


def test_hand_written_expectations_only_apply_to_their_stage(spec, gx_dir):
    suite = build_suite(spec, "raw_labels", gx_dir=gx_dir)
    assert len(suite.expectations) == len(derived_expectations(spec, "raw_labels"))


def test_suite_records_where_each_expectation_comes_from(spec, gx_dir):
    suite = build_suite(spec, "raw_features", gx_dir=gx_dir)
    sources = [e.meta.get("source") for e in suite.expectations]
    assert sources[-1] == "hand-written"
    assert sources[:-1] == ["spec"] * (len(sources) - 1)


def test_hand_written_expectation_failure_is_described(gx_validate, spec, gx_dir):
    suite = build_suite(spec, "raw_features", gx_dir=gx_dir)
    df = raw_frame(FILE_A, FILE_B).assign(monthly_charges=450.0)  # in range per row, but the mean is too high

    lines = describe_failures(gx_validate(df, suite))

    assert len(lines) == 1, lines
    assert lines[0].startswith("expect_column_mean_to_be_between(column=monthly_charges, min_value=20")
    # The on-call reader sees the number, not a numpy repr such as "np.float64(450.0)".
    assert lines[0].endswith(": observed 450.0")


@pytest.fixture
def shipped_gx_dir(tmp_path):
    """A copy of the project's hand-written suites, so that building a suite writes nothing into the repo."""
    target = tmp_path / "gx" / "expectations"
    target.mkdir(parents=True)
    for path in (validation.GX_DIR / "expectations").glob("*.json"):
        shutil.copy(path, target / path.name)
    return target.parent


@pytest.mark.parametrize("stage", [pytest.param(s, id=s) for s in validation.STAGES])
def test_shipped_suites_build_for_every_stage(spec, shipped_gx_dir, stage):
    expected = {"rows": 10, "model_version": "1", "dag_run_id": "r"} if stage == "scored_output" else None
    suite = build_suite(spec, stage, gx_dir=shipped_gx_dir, expected=expected)
    min_rows = spec.training.min_training_rows if stage == "training_set" else 1
    derived = derived_expectations(spec, stage, min_rows, expected)
    assert suite.name == f"churn_{stage}"
    assert [e.meta["source"] for e in suite.expectations[: len(derived)]] == ["spec"] * len(derived)
    assert all(e.meta["source"] == "hand-written" for e in suite.expectations[len(derived) :])


def test_clean_sample_day_passes_the_shipped_suites(gx_validate, tmp_path, spec, shipped_gx_dir):
    day = date(2026, 2, 1)
    root = tmp_path.as_uri()
    generate(spec, root, SampleOptions(start=day, end=day, rows_per_day=600, population=2000, label_delay_days=0))

    for stage, kind in (("raw_features", "features"), ("raw_labels", "labels")):
        df = read_stage(Storage(), spec, stage, partition_uris(spec, root, [day], kind))
        result = gx_validate(df, build_suite(spec, stage, gx_dir=shipped_gx_dir))
        assert result["success"], (stage, describe_failures(result))


def test_unreadable_hand_written_suite_names_the_file(spec, tmp_path):
    path = tmp_path / "expectations" / "churn_raw_features.json"
    path.parent.mkdir()
    path.write_text("{not json")

    # A broken file is bad config: final, and the message says which suite and where it lives.
    with pytest.raises(DataValidationError, match="cannot read") as exc:
        build_suite(spec, "raw_features", gx_dir=tmp_path)
    assert "churn_raw_features" in str(exc.value)
    assert str(tmp_path) in str(exc.value)


# --- describing results -----------------------------------------------------------------------


def test_describe_failures_is_capped():
    failed = [
        {"expectation_type": "expect_column_to_exist", "success": False, "kwargs": {"column": f"c{i}"}, "result": {}}
        for i in range(15)
    ]
    passed = [{"expectation_type": "expect_column_to_exist", "success": True, "kwargs": {"column": "ok"}}]

    lines = describe_failures({"expectations": passed + failed}, limit=12)

    assert len(lines) == 13
    assert lines[0] == "expect_column_to_exist(column=c0): column not found"
    assert lines[-1] == "... and 3 more"


def test_describe_failures_hides_noise_in_the_rule():
    result = {
        "expectations": [
            {
                "expectation_type": "expect_table_row_count_to_be_between",
                "success": False,
                "kwargs": {"batch_id": "unit-frame", "min_value": 1, "max_value": None},
                "result": {},
            }
        ]
    }
    assert describe_failures(result) == ["expect_table_row_count_to_be_between(min_value=1): could not be evaluated"]


def test_a_tasks_full_result_lies_under_the_work_root_at_a_place_its_identity_names():
    key = validation.TaskKey("churn_training", "manual__2026-11-20T00:00:00+00:00", "validate_raw_features")
    mapped = validation.TaskKey("churn_scoring", "scheduled__x", "validate.shard", map_index=3)

    assert validation.result_uri("s3://lake/work/", key) == (
        "s3://lake/work/validation/churn_training/manual__2026-11-20T00_00_00_00_00/validate_raw_features/gx_result.json"
    )
    mapped_uri = validation.result_uri("file:///w", mapped)
    assert mapped_uri.endswith("/scheduled__x/validate.shard/map_index=3/gx_result.json")
    dots = validation.TaskKey("d", "..", "t")
    assert validation.result_uri("file:///w", dots) == "file:///w/validation/d/_../t/gx_result.json"


@pytest.mark.parametrize(
    "fields",
    [
        {"dag_id": ".."},
        {"dag_id": "churn/../../etc"},
        {"task_id": "."},
        {"task_id": "a b"},
        {"dag_id": "x" * 251},
        {"run_id": ""},
        {"run_id": "run\n1"},
        {"map_index": -2},
    ],
    ids=["dotdot-dag", "slash-dag", "dot-task", "space-task", "long-dag", "empty-run", "control-run", "map-index"],
)
def test_a_task_identity_from_a_url_is_checked(fields):
    values = {"dag_id": "churn_scoring", "run_id": "r1", "task_id": "validate_output", "map_index": -1, **fields}
    with pytest.raises(validation.InvalidTaskKeyError):
        validation.TaskKey(**values)


def test_a_summary_that_names_another_location_is_flagged():
    assert validation.claimed_elsewhere({"result_uri": "file:///w/a.json"}, "file:///w/a.json") is None
    assert validation.claimed_elsewhere({"result_uri": None}, "file:///w/a.json") is None
    assert validation.claimed_elsewhere({"result_uri": "file:///etc/x"}, "file:///w/a.json") == "file:///etc/x"


def test_the_output_suites_sessions_scan_with_one_backend_and_keep_the_connections_own_settings():
    from sqlalchemy.engine import make_url

    from include.nightshift.validation.run import SERIAL_SCANS, with_session_settings

    given = "postgresql+psycopg2://writer:p%40ss@db:5432/wh?sslmode=require&options=-c%20statement_timeout%3D5000"
    url = make_url(with_session_settings(given, SERIAL_SCANS))

    assert url.password == "p@ss" and url.host == "db" and url.database == "wh"
    assert url.query["sslmode"] == "require"
    assert url.query["options"] == "-c statement_timeout=5000 -c max_parallel_workers_per_gather=0"
