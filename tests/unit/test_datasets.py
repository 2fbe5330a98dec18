"""Training windows and training sets: which days a run reads, missing partitions, the time-based split."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from include.nightshift.datasets import (
    DATE_COLUMN,
    Window,
    build_training_set,
    content_hash,
    date_ranges,
    partition_uris,
    read_partitions,
    require_partitions,
    resolve_window,
)
from include.nightshift.errors import DataValidationError, MissingPartitionError, ParamsError
from include.nightshift.storage import Storage

pytestmark = pytest.mark.unit

RUN_DATE = date(2026, 11, 20)


def d(text: str) -> date:
    return date.fromisoformat(text)


# --- windows ----------------------------------------------------------------------------------


def test_default_window_ends_at_the_last_labelled_day(spec):
    # churn: labels 7 days late, 28-day window, 4 holdout days.
    window = resolve_window(spec, RUN_DATE)
    assert window == Window(start=d("2026-10-17"), end=d("2026-11-13"), holdout_start=d("2026-11-10"))
    assert len(window.days) == spec.training.window_days
    assert window.days[0] == window.start and window.days[-1] == window.end


@pytest.mark.parametrize(
    "window_end",
    [pytest.param(None, id="none"), pytest.param("", id="empty-string")],
)
def test_empty_window_end_means_the_default(spec, window_end):
    assert resolve_window(spec, RUN_DATE, window_end) == resolve_window(spec, RUN_DATE)


@pytest.mark.parametrize(
    ("window_end", "expected"),
    [
        pytest.param("2026-11-01", Window(d("2026-10-05"), d("2026-11-01"), d("2026-10-29")), id="earlier-day"),
        pytest.param("2026-11-13", Window(d("2026-10-17"), d("2026-11-13"), d("2026-11-10")), id="last-labelled-day"),
    ],
)
def test_explicit_window_end(spec, window_end, expected):
    assert resolve_window(spec, RUN_DATE, window_end) == expected


@pytest.mark.parametrize(
    "window_end",
    [
        pytest.param("2026-13-01", id="month-13"),
        pytest.param("yesterday", id="word"),
        pytest.param("20/11/2026", id="european-format"),
    ],
)
def test_window_end_that_is_not_a_date_is_a_params_error(spec, window_end):
    with pytest.raises(ParamsError) as exc:
        resolve_window(spec, RUN_DATE, window_end)
    assert "'window_end'" in str(exc.value)
    assert repr(window_end) in str(exc.value)
    assert "YYYY-MM-DD" in str(exc.value)


def test_window_end_after_the_last_labelled_day_is_a_params_error(spec):
    with pytest.raises(ParamsError) as exc:
        resolve_window(spec, RUN_DATE, "2026-11-14")
    message = str(exc.value)
    assert "'window_end' is 2026-11-14" in message
    assert "7 days late" in message
    assert "the last labelled day is 2026-11-13" in message


def test_window_round_trips_through_a_dict():
    window = Window(d("2026-10-17"), d("2026-11-13"), d("2026-11-10"))
    assert window.as_dict() == {"start": "2026-10-17", "end": "2026-11-13", "holdout_start": "2026-11-10"}
    assert Window.from_dict(window.as_dict()) == window


# --- partitions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        pytest.param(["2026-01-01"], "2026-01-01", id="one-day"),
        pytest.param(
            ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-07"],
            "2026-01-01..2026-01-03, 2026-01-07",
            id="run-then-single",
        ),
        pytest.param(
            ["2026-01-07", "2026-01-02", "2026-01-01", "2026-01-03"],
            "2026-01-01..2026-01-03, 2026-01-07",
            id="unsorted",
        ),
        pytest.param(["2026-01-01", "2026-01-03", "2026-01-05"], "2026-01-01, 2026-01-03, 2026-01-05", id="no-runs"),
        pytest.param(
            ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"], "2026-02-27..2026-03-02", id="across-month"
        ),
        pytest.param(
            ["2026-01-01", "2026-01-02", "2026-01-05", "2026-01-06"],
            "2026-01-01..2026-01-02, 2026-01-05..2026-01-06",
            id="two-runs",
        ),
        pytest.param([], "", id="none"),
    ],
)
def test_date_ranges_compresses_consecutive_days(days, expected):
    assert date_ranges([d(x) for x in days]) == expected


def test_partition_uris_follow_the_spec_templates(spec):
    days = [d("2026-01-01"), d("2026-01-02")]
    features = partition_uris(spec, "file:///landing", days, "features")
    labels = partition_uris(spec, "file:///landing", days, "labels")
    assert features[days[1]] == "file:///landing/churn/features/date=2026-01-02/part-0.parquet"
    assert labels[days[0]] == "file:///landing/churn/labels/date=2026-01-01/part-0.parquet"


def test_require_partitions_names_every_missing_date(tmp_path, spec):
    storage = Storage()
    root = tmp_path.as_uri()
    days = [d("2026-01-01") + timedelta(days=i) for i in range(7)]
    uris = partition_uris(spec, root, days, "features")
    for day in (days[0], days[4]):
        storage.write_bytes(b"x", uris[day])

    with pytest.raises(MissingPartitionError) as exc:
        require_partitions(storage, uris, "features")

    message = str(exc.value)
    assert "5 of 7 features partitions are missing" in message
    assert "dates 2026-01-02..2026-01-04, 2026-01-06..2026-01-07" in message
    assert uris[days[1]] in message  # an example URI to look at
    assert "'window_end'" in message  # and what to do about it
    assert isinstance(exc.value, DataValidationError)  # final: retrying does not make data arrive


def test_require_partitions_passes_when_all_are_there(sample_root, spec):
    days = [d("2026-11-05"), d("2026-11-06")]
    assert require_partitions(Storage(), partition_uris(spec, sample_root, days, "labels"), "labels") is None


def test_read_partitions_adds_the_partition_date(sample_root, spec):
    days = [d("2026-11-06"), d("2026-11-05")]
    df = read_partitions(Storage(), partition_uris(spec, sample_root, days, "features"))
    assert len(df) == 400
    assert df[DATE_COLUMN].tolist() == [pd.Timestamp("2026-11-05")] * 200 + [pd.Timestamp("2026-11-06")] * 200
    assert df.index.is_unique


# --- training sets ----------------------------------------------------------------------------


def test_window_of_the_small_spec(window_frames):
    window, _, _ = window_frames
    assert window == Window(d("2026-11-06"), d("2026-11-13"), d("2026-11-12"))


def test_holdout_is_the_last_days_and_train_the_earlier_ones(small_spec, window_frames):
    window, features, labels = window_frames
    ts = build_training_set(small_spec, features, labels, window)

    holdout_days = sorted(ts.holdout[DATE_COLUMN].dt.date.unique())
    train_days = sorted(ts.train[DATE_COLUMN].dt.date.unique())
    assert holdout_days == [d("2026-11-12"), d("2026-11-13")]
    assert train_days == [window.start + timedelta(days=i) for i in range(6)]
    assert len(ts.train) == 6 * 200 and len(ts.holdout) == 2 * 200
    assert ts.unlabelled_rows == 0


def test_training_set_has_key_date_features_and_an_int_target(small_spec, window_frames):
    window, features, labels = window_frames
    ts = build_training_set(small_spec, features, labels, window)
    expected = [small_spec.entity_key, DATE_COLUMN, *small_spec.feature_names, small_spec.target.name]
    assert list(ts.train.columns) == expected
    assert str(ts.train[small_spec.target.name].dtype) == "int64"
    assert set(ts.holdout[small_spec.target.name].unique()) == {0, 1}


def test_unlabelled_rows_are_dropped_and_counted(small_spec, window_frames):
    window, features, labels = window_frames
    # 30 labels of the first day and all of the last day have not arrived.
    missing = labels.index[:30].union(labels.index[labels[DATE_COLUMN] == pd.Timestamp(window.end)])
    ts = build_training_set(small_spec, features, labels.drop(index=missing), window)

    assert ts.unlabelled_rows == 30 + 200
    assert len(ts.train) == 6 * 200 - 30
    assert len(ts.holdout) == 200
    assert ts.train[small_spec.target.name].notna().all()
    assert ts.holdout[DATE_COLUMN].dt.date.unique().tolist() == [d("2026-11-12")]


def test_the_split_is_reproducible(small_spec, window_frames):
    window, features, labels = window_frames
    a = build_training_set(small_spec, features, labels, window)
    b = build_training_set(small_spec, features.sample(frac=1, random_state=3), labels, window)
    assert a.content_hash == b.content_hash
    pd.testing.assert_frame_equal(a.train, b.train)


def test_too_few_rows_names_the_rule(small_spec, window_frames):
    window, features, labels = window_frames
    strict = small_spec.model_copy(
        update={"training": small_spec.training.model_copy(update={"min_training_rows": 5000})}
    )
    with pytest.raises(DataValidationError) as exc:
        build_training_set(strict, features, labels, window)
    message = str(exc.value)
    assert "has 1200 labelled rows in 2026-11-06..2026-11-11" in message
    assert "training.min_training_rows >= 5000" in message


@pytest.mark.parametrize(
    ("split", "only_negatives_from"),
    [
        pytest.param("training", None, id="train-all-negative"),
        pytest.param("holdout", "2026-11-12", id="holdout-all-negative"),
    ],
)
def test_a_split_with_one_class_is_rejected(small_spec, window_frames, split, only_negatives_from):
    window, features, labels = window_frames
    one_class = labels.copy()
    rows = one_class[DATE_COLUMN] >= pd.Timestamp(only_negatives_from) if only_negatives_from else slice(None)
    one_class.loc[rows, small_spec.target.name] = 0

    with pytest.raises(DataValidationError) as exc:
        build_training_set(small_spec, features, one_class, window)
    message = str(exc.value)
    assert f"{split} split of churn has only class(es) [0]" in message
    assert "'churned'" in message


def test_duplicate_labels_are_rejected_not_double_counted(small_spec, window_frames):
    window, features, labels = window_frames
    with pytest.raises(DataValidationError) as exc:
        build_training_set(small_spec, features, pd.concat([labels, labels.head(1)]), window)
    message = str(exc.value)
    assert "labels of churn have 2 rows sharing (customer_id, feature_date)" in message
    assert "one row per entity and day" in message


# --- content hash -----------------------------------------------------------------------------


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [1, 2, 3], "x": [0.5, None, 2.0], "c": ["a", "b", None]})


def test_content_hash_ignores_the_index(frame):
    reindexed = frame.set_axis([10, 20, 30])
    assert content_hash(reindexed) == content_hash(frame)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda df: df.assign(x=[0.5, None, 2.5]), id="one-float-value"),
        pytest.param(lambda df: df.assign(c=["a", "b", "c"]), id="missing-becomes-value"),
        pytest.param(lambda df: df.rename(columns={"x": "y"}), id="column-renamed"),
        pytest.param(lambda df: df.iloc[[1, 0, 2]].reset_index(drop=True), id="rows-reordered"),
        pytest.param(lambda df: df.iloc[:2], id="row-dropped"),
    ],
)
def test_content_hash_changes_with_the_content(frame, change):
    assert content_hash(change(frame)) != content_hash(frame)
