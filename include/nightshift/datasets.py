"""Training windows and training sets: which days a run reads, and the time-based split."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import (
    DataValidationError,
    MissingPartitionError,
    ParamsError,
)

if TYPE_CHECKING:
    import pandas as pd

    from include.nightshift.sources import DataPaths
    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

log = logging.getLogger(__name__)

DATE_COLUMN = "feature_date"


@dataclass(frozen=True)
class Window:
    """The labelled days a training run reads; the last ``holdout_days`` of them are the holdout."""

    start: date
    end: date
    holdout_start: date

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def as_dict(self) -> dict[str, str]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "holdout_start": self.holdout_start.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Window:
        return cls(date.fromisoformat(d["start"]), date.fromisoformat(d["end"]), date.fromisoformat(d["holdout_start"]))


def resolve_window(spec: ModelSpec, run_date: date, window_end: str | None = None) -> Window:
    """The window for a run.

    Args:
        spec: The model.
        run_date: The run's date (its logical date, or when it was triggered).
        window_end: ``YYYY-MM-DD`` from the trigger form; empty means the last day whose labels have
            landed by ``run_date`` (``run_date - label_delay_days``).

    Raises:
        ParamsError: ``window_end`` is not a date, or lies after the last day with labels.
    """
    latest_labelled = run_date - spec.label_delay
    if window_end:
        try:
            end = date.fromisoformat(str(window_end))
        except ValueError:
            raise ParamsError(f"param 'window_end' must be a date YYYY-MM-DD, got {window_end!r}") from None
        if end > latest_labelled:
            raise ParamsError(
                f"param 'window_end' is {end}, but labels arrive {spec.target.label_delay_days} days late: "
                f"on {run_date} the last labelled day is {latest_labelled}"
            )
    else:
        end = latest_labelled
    start = end - timedelta(days=spec.training.window_days - 1)
    holdout_start = end - timedelta(days=spec.training.holdout_days - 1)
    return Window(start=start, end=end, holdout_start=holdout_start)


def partition_uris(spec: ModelSpec, root: str | DataPaths, days: list[date], kind: str) -> dict[date, str]:
    """The Parquet file every step reads for each of ``days``, ``kind`` 'features' or 'labels'.

    ``root`` is the landing root (Parquet files) or the run's :class:`~include.nightshift.sources.DataPaths`
    (CSV and SQL sources are read from where they were landed in the work area).
    """
    from include.nightshift.sources import DataPaths, day_uri

    paths = root if isinstance(root, DataPaths) else DataPaths(root)
    which: Any = kind
    return {d: day_uri(spec, paths, which, d) for d in days}


def date_ranges(days: list[date]) -> str:
    """``[d1, d2, d3, d7]`` -> ``"d1..d3, d7"``."""
    days = sorted(days)
    if not days:
        return ""
    parts: list[str] = []
    start = prev = days[0] if days else None
    for d in [*days[1:], None]:
        if d is not None and prev is not None and d - prev == timedelta(days=1):
            prev = d
            continue
        parts.append(f"{start}" if start == prev else f"{start}..{prev}")
        start = prev = d
    return ", ".join(parts)


def require_partitions(storage: Storage, uris: dict[date, str], kind: str) -> None:
    """Raise ``MissingPartitionError`` naming every missing date and an example URI."""
    missing = sorted(d for d, u in uris.items() if not storage.exists(u))
    if missing:
        raise MissingPartitionError(
            f"{len(missing)} of {len(uris)} {kind} partitions are missing, dates {date_ranges(missing)} "
            f"(e.g. {uris[missing[0]]}). Check the landing job for those dates, or trigger with an earlier "
            f"'window_end'."
        )


def read_partitions(storage: Storage, uris: dict[date, str], source_column: str | None = None) -> pd.DataFrame:
    """Concatenate the partitions, adding ``feature_date`` (and the file's URI as ``source_column``)."""
    import pandas as pd

    frames = []
    for day, uri in sorted(uris.items()):
        df = storage.read_parquet(uri)
        if source_column:
            df[source_column] = uri
        df[DATE_COLUMN] = pd.Timestamp(day)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class TrainingSet:
    train: pd.DataFrame
    holdout: pd.DataFrame
    content_hash: str
    unlabelled_rows: int


def content_hash(df: pd.DataFrame) -> str:
    """A SHA-256 of the frame's columns and values, independent of the row index."""
    import pandas as pd

    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _check_one_row_per_entity_and_day(spec: ModelSpec, features: pd.DataFrame, labels: pd.DataFrame) -> None:
    key = [spec.entity_key, DATE_COLUMN]
    for name, frame in (("features", features), ("labels", labels)):
        dupes = frame.duplicated(subset=key, keep=False)
        if dupes.any():
            example = frame.loc[dupes, key].head(3).astype(str).to_dict("records")
            raise DataValidationError(
                f"{name} of {spec.name} have {int(dupes.sum())} rows sharing ({', '.join(key)}); "
                f"one row per entity and day is required, e.g. {example}"
            )


def target_values(spec: ModelSpec, values: pd.Series) -> pd.Series:
    """Labels in the target type's form: 0/1 integers, class names (text) or numbers."""
    if spec.target.type == "binary":
        return values.astype("int64")
    if spec.target.type == "multiclass":
        return values.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    return values.astype("float64")


def _check_classes(spec: ModelSpec, name: str, part: pd.DataFrame) -> None:
    target = spec.target
    classes = sorted(part[target.name].unique().tolist())
    if target.type == "binary" and len(classes) < 2:
        raise DataValidationError(
            f"{name} split of {spec.name} has only class(es) {classes} in column {target.name!r} "
            f"({len(part)} rows); both 0 and 1 are needed to train and evaluate"
        )
    if target.type == "multiclass":
        unknown = sorted(set(classes) - set(target.classes or ()))
        if unknown:
            raise DataValidationError(
                f"{name} split of {spec.name} has labels {unknown} in column {target.name!r} that are not in "
                f"target.classes {list(target.classes or ())}"
            )
        if name == "training" and len(classes) < 2:
            raise DataValidationError(
                f"training split of {spec.name} has only class(es) {classes} in column {target.name!r}; "
                "at least two are needed to train"
            )


def build_training_set(spec: ModelSpec, features: pd.DataFrame, labels: pd.DataFrame, window: Window) -> TrainingSet:
    """Join features with their labels and split by time: the most recent days are the holdout.

    Every landed feature column is kept (not only the spec's), so that the champion can be measured on
    the same holdout even when today's spec no longer lists a column it needs.

    Raises:
        DataValidationError: too few labelled rows, or a split without the classes it needs.
    """
    import pandas as pd

    key = [spec.entity_key, DATE_COLUMN]
    _check_one_row_per_entity_and_day(spec, features, labels)
    target = spec.target.name
    cols = [*key, *spec.input_names]
    cols += [c for c in features.columns if c not in cols and c != target and not c.startswith("_")]
    joined = features[cols].merge(labels[[*key, target]], on=key, how="left", validate="one_to_one")
    unlabelled = int(joined[target].isna().sum())
    joined = joined.dropna(subset=[target])
    joined[target] = target_values(spec, joined[target])
    joined = joined.sort_values(key, kind="stable").reset_index(drop=True)

    in_holdout = joined[DATE_COLUMN] >= pd.Timestamp(window.holdout_start)
    train, holdout = joined[~in_holdout].reset_index(drop=True), joined[in_holdout].reset_index(drop=True)
    if len(train) < spec.training.min_training_rows:
        raise DataValidationError(
            f"training set for {spec.name} has {len(train)} labelled rows in "
            f"{window.start}..{window.holdout_start - timedelta(days=1)}; "
            f"the spec requires training.min_training_rows >= {spec.training.min_training_rows}"
        )
    for name, part in (("training", train), ("holdout", holdout)):
        _check_classes(spec, name, part)
    if unlabelled:
        log.info("%d feature rows have no label yet and were left out", unlabelled)
    return TrainingSet(train=train, holdout=holdout, content_hash=content_hash(joined), unlabelled_rows=unlabelled)


def load_training_set(storage: Storage, spec: ModelSpec, paths: str | DataPaths, window: Window) -> TrainingSet:
    """Read the window's features and labels (from the landing area, or as landed) and build the training set."""
    features = read_partitions(storage, partition_uris(spec, paths, window.days, "features"))
    labels = read_partitions(storage, partition_uris(spec, paths, window.days, "labels"))
    return build_training_set(spec, features, labels, window)
