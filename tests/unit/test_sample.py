"""The synthetic data set: reproducible, realistic (imbalanced, with gaps), late labels, drift and bad days."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest

from include.nightshift.datasets import content_hash
from include.nightshift.sample import BAD_KINDS, SampleOptions, break_features, generate
from include.nightshift.storage import Storage

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 2)


def small_options(**overrides) -> SampleOptions:
    return replace(SampleOptions(start=DAY, end=DAY, rows_per_day=200, population=2000), **overrides)


def generated_features(spec, root: str, opts: SampleOptions, day: date = DAY):
    generate(spec, root, opts)
    return Storage().read_parquet(spec.landing.features(root, day.isoformat()))


@pytest.fixture(scope="module")
def day_features(tmp_path_factory, spec):
    """One clean day of features, 200 rows."""
    return generated_features(spec, tmp_path_factory.mktemp("day").as_uri(), small_options())


def test_same_seed_gives_identical_data(tmp_path, spec):
    a = generated_features(spec, (tmp_path / "a").as_uri(), small_options(seed=11))
    b = generated_features(spec, (tmp_path / "b").as_uri(), small_options(seed=11))
    assert content_hash(a) == content_hash(b)


def test_different_seed_gives_different_data(tmp_path, spec):
    a = generated_features(spec, (tmp_path / "a").as_uri(), small_options(seed=11))
    b = generated_features(spec, (tmp_path / "b").as_uri(), small_options(seed=12))
    assert content_hash(a) != content_hash(b)


def test_a_day_does_not_depend_on_the_range_it_was_generated_in(tmp_path, spec):
    alone = generated_features(spec, (tmp_path / "a").as_uri(), small_options())
    in_range = generated_features(
        spec, (tmp_path / "b").as_uri(), small_options(start=DAY - timedelta(days=2), end=DAY + timedelta(days=1))
    )
    # The tenure grows with the days since `start`; everything else is a pure function of seed and date.
    cols = [c for c in alone.columns if c not in ("tenure_months", "total_charges")]
    assert content_hash(alone[cols]) == content_hash(in_range[cols])


def test_features_have_the_spec_columns_and_unique_keys(spec, day_features):
    assert list(day_features.columns) == [spec.entity_key, *spec.feature_names]
    assert len(day_features) == 200
    assert day_features[spec.entity_key].is_unique


def test_features_respect_the_spec_ranges_and_categories(spec, day_features):
    for f in spec.features:
        values = day_features[f.name].dropna()
        if f.type == "category":
            assert set(values) <= set(f.categories), f.name
        else:
            assert values.between(f.min, f.max).all(), f.name


def days_of(opts: SampleOptions, until: date | None = None) -> list[date]:
    last = until or opts.end
    return [opts.start + timedelta(days=i) for i in range((last - opts.start).days + 1)]


def labels_end(opts: SampleOptions) -> date:
    return opts.end - timedelta(days=opts.label_delay_days)


def test_labels_are_imbalanced_like_real_churn(sample_root, spec, sample_options):
    storage = Storage()
    days = days_of(sample_options, labels_end(sample_options))
    labels = [storage.read_parquet(spec.landing.labels(sample_root, d.isoformat()))[spec.target.name] for d in days]
    positive_rate = sum(y.sum() for y in labels) / sum(len(y) for y in labels)
    assert 0.05 < positive_rate < 0.30
    assert all(set(y.unique()) <= {0, 1} for y in labels)


@pytest.mark.parametrize(
    "column",
    [
        pytest.param("total_charges", id="total_charges"),
        pytest.param("data_usage_gb", id="data_usage_gb"),
        pytest.param("payment_method", id="payment_method"),
    ],
)
def test_nullable_features_have_missing_values(sample_root, spec, sample_options, column):
    storage = Storage()
    missing = sum(
        storage.read_parquet(spec.landing.features(sample_root, d.isoformat()))[column].isna().sum()
        for d in days_of(sample_options)
    )
    assert missing > 0


def test_non_nullable_features_have_no_missing_values(spec, day_features):
    for f in spec.features:
        if not f.nullable:
            assert day_features[f.name].notna().all(), f.name


def test_labels_land_only_up_to_end_minus_label_delay(sample_root, spec, sample_options):
    storage = Storage()
    last_labelled = labels_end(sample_options)
    for day in days_of(sample_options):
        assert storage.exists(spec.landing.features(sample_root, day.isoformat())), day
        has_labels = storage.exists(spec.landing.labels(sample_root, day.isoformat()))
        assert has_labels == (day <= last_labelled), day
    assert not storage.exists(spec.landing.features(sample_root, (sample_options.end + timedelta(days=1)).isoformat()))


def test_generate_reports_what_it_wrote(tmp_path, spec):
    opts = small_options(end=DAY + timedelta(days=9), label_delay_days=7)
    counts = generate(spec, tmp_path.as_uri(), opts)
    assert counts == {"days": 10, "feature_rows": 2000, "label_rows": 600}


def test_write_labels_false_writes_features_only(tmp_path, spec):
    counts = generate(spec, tmp_path.as_uri(), small_options(write_labels=False))
    assert counts["label_rows"] == 0
    assert not Storage().exists(spec.landing.labels(tmp_path.as_uri(), DAY.isoformat()))


def test_drift_raises_monthly_charges(tmp_path, spec):
    later = DAY + timedelta(days=3)
    opts = small_options(end=later)
    clean = generated_features(spec, (tmp_path / "clean").as_uri(), opts, later)
    drifted = generated_features(spec, (tmp_path / "drift").as_uri(), replace(opts, drift_from=later), later)
    assert drifted["monthly_charges"].mean() > 1.2 * clean["monthly_charges"].mean()
    # More month-to-month contracts after the drift.
    assert (drifted["contract_type"] == "month-to-month").mean() > (clean["contract_type"] == "month-to-month").mean()


def test_drift_leaves_days_before_it_alone(tmp_path, spec):
    opts = small_options(end=DAY + timedelta(days=3))
    clean = generated_features(spec, (tmp_path / "clean").as_uri(), opts)
    drifted = generated_features(spec, (tmp_path / "drift").as_uri(), replace(opts, drift_from=DAY + timedelta(days=1)))
    assert content_hash(clean) == content_hash(drifted)


def _is_missing_column(df) -> bool:
    return "monthly_charges" not in df.columns


def _is_wrong_dtype(df) -> bool:
    col = df["tenure_months"]
    return pd.api.types.is_string_dtype(col) and col.str.endswith(" months").all()


def _is_out_of_range(df) -> bool:
    bad = (df["tenure_months"] < 0).sum()
    return 0 < bad < len(df)


def _is_empty(df) -> bool:
    return len(df) == 0 and "monthly_charges" in df.columns


@pytest.mark.parametrize(
    ("kind", "is_broken"),
    [
        pytest.param("missing_column", _is_missing_column, id="missing_column"),
        pytest.param("wrong_dtype", _is_wrong_dtype, id="wrong_dtype"),
        pytest.param("out_of_range", _is_out_of_range, id="out_of_range"),
        pytest.param("empty", _is_empty, id="empty"),
    ],
)
def test_break_features_breaks_the_frame_as_named(day_features, kind, is_broken):
    before = day_features.copy()
    broken = break_features(day_features, kind, seed=7)
    assert is_broken(broken)
    assert not is_broken(day_features)
    assert day_features.equals(before)  # the input is not modified


def test_every_bad_kind_is_covered():
    assert set(BAD_KINDS) == {"missing_column", "wrong_dtype", "out_of_range", "empty"}


def test_unknown_bad_kind_raises(day_features):
    with pytest.raises(ValueError, match="bad_kind 'typo' is not one of"):
        break_features(day_features, "typo", seed=7)


def test_bad_dates_break_only_those_days(tmp_path, spec):
    bad_day = DAY + timedelta(days=1)
    opts = small_options(end=DAY + timedelta(days=2), bad_dates=(bad_day,), bad_kind="missing_column")
    root = tmp_path.as_uri()
    generate(spec, root, opts)
    storage = Storage()
    for day in (DAY, bad_day, DAY + timedelta(days=2)):
        columns = storage.read_schema(spec.landing.features(root, day.isoformat())).names
        assert ("monthly_charges" in columns) == (day != bad_day), day
