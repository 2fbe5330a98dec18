"""Fixtures for the unit tests: a small variant of the churn spec and a tiny generated landing area.

Nothing here starts a server; the data lives under pytest's temporary directory.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from include.nightshift.datasets import partition_uris, read_partitions, resolve_window
from include.nightshift.storage import Storage

# The fixed "today" of the unit data: features land up to this day, labels up to 7 days before it.
SAMPLE_END = date(2026, 11, 20)
SAMPLE_DAYS = 16
LABEL_DELAY_DAYS = 7


@pytest.fixture(scope="session")
def small_spec(spec):
    """The churn spec with a window that fits the tiny sample: 8 days, the last 2 are the holdout."""
    training = spec.training.model_copy(update={"window_days": 8, "holdout_days": 2, "min_training_rows": 200})
    return spec.model_copy(update={"training": training})


@pytest.fixture(scope="session")
def sample_options():
    from include.nightshift.sample import SampleOptions

    return SampleOptions(
        start=SAMPLE_END - timedelta(days=SAMPLE_DAYS - 1),
        end=SAMPLE_END,
        rows_per_day=200,
        population=2000,
        label_delay_days=LABEL_DELAY_DAYS,
    )


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory, spec, sample_options) -> str:
    """A landing root (file:// URI) holding 16 days of features and 9 days of labels, 200 rows a day."""
    from include.nightshift.sample import generate

    root = tmp_path_factory.mktemp("landing").as_uri()
    generate(spec, root, sample_options)
    return root


@pytest.fixture(scope="session")
def window_frames(sample_root, small_spec):
    """Features and labels of the small spec's default window (8 labelled days, 200 rows each)."""
    storage = Storage()
    window = resolve_window(small_spec, SAMPLE_END)
    features = read_partitions(storage, partition_uris(small_spec, sample_root, window.days, "features"))
    labels = read_partitions(storage, partition_uris(small_spec, sample_root, window.days, "labels"))
    return window, features, labels
