"""The sections of a model spec, each a frozen pydantic model with rules that name the key and the value."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from include.nightshift.spec import estimators
from include.nightshift.spec.metrics import Metric, TargetType, non_negative_metrics, target_type_of
from include.nightshift.spec.names import Frozen, SafeName, check_safe_name
from include.nightshift.spec.search import Search, check_search
from include.nightshift.spec.timeouts import TIMEOUT_DEFAULTS


class Feature(Frozen):
    """One input column of the model, or a column derived from the others (``expr``)."""

    name: SafeName
    type: Literal["int", "float", "category"]
    description: str = ""
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    # Share of rows that may break the range / category rule before validation fails.
    mostly: float = Field(default=1.0, ge=0.0, le=1.0)
    # A derived feature: computed from the other features inside the logged model (see expressions.py).
    expr: str | None = Field(default=None, min_length=1, max_length=2000)

    _name_ok = field_validator("name")(lambda cls, v: check_safe_name(v, "feature name"))

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Feature:
        if self.type == "category":
            if not self.categories:
                raise ValueError(f"feature {self.name!r} has type 'category' and needs a non-empty 'categories' list")
            if self.min is not None or self.max is not None:
                raise ValueError(f"feature {self.name!r} has type 'category': 'min'/'max' do not apply")
        else:
            if self.categories:
                raise ValueError(
                    f"feature {self.name!r} has type {self.type!r}: 'categories' only applies to 'category'"
                )
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"feature {self.name!r}: min {self.min} is greater than max {self.max}")
        return self

    @property
    def derived(self) -> bool:
        return self.expr is not None


def _as_text(values: Any) -> Any:
    """Class labels are text (``[1, 2, 3]`` in YAML means the labels "1", "2", "3")."""
    if isinstance(values, list | tuple):
        return tuple(str(v) for v in values)
    return values


class Target(Frozen):
    """What the model predicts: a 0/1 label, one of ``classes``, or a number (``regression``)."""

    name: SafeName
    label_delay_days: int = Field(ge=0, le=365)
    type: TargetType = "binary"
    classes: Annotated[tuple[str, ...] | None, BeforeValidator(_as_text)] = None
    min: float | None = None
    max: float | None = None

    _name_ok = field_validator("name")(lambda cls, v: check_safe_name(v, "target name"))

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Target:
        if self.type == "multiclass":
            if not self.classes or len(self.classes) < 3:
                raise ValueError(
                    "target.type multiclass needs 'classes', a list of at least 3 labels "
                    f"(got {list(self.classes or [])}); for two classes use target.type binary"
                )
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"target.classes must be distinct; got {list(self.classes)}")
        elif self.classes is not None:
            raise ValueError(f"target.classes only applies to target.type multiclass (this target is {self.type})")
        if self.type != "regression" and (self.min is not None or self.max is not None):
            raise ValueError(f"target.min/max only apply to target.type regression (this target is {self.type})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"target.min {self.min} is greater than target.max {self.max}")
        return self


_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_PARAM = re.compile(r"%\((\w+)\)s")


class Landing(Frozen):
    """Where the daily partitions come from: files (``{root}`` and ``{date}`` substituted), or SQL queries
    on an Airflow connection (``%(date)s`` bound by the driver)."""

    format: Literal["parquet", "csv"] = "parquet"
    features_uri: str | None = None
    labels_uri: str | None = None
    conn_id: str | None = None
    features_query: str | None = None
    labels_query: str | None = None

    @field_validator("features_uri", "labels_uri")
    @classmethod
    def _template_ok(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "{date}" not in v:
            raise ValueError(f"URI template {v!r} must contain '{{date}}' so each day is its own partition")
        if not (v.startswith("{root}") or v.startswith(("file://", "s3://"))):
            raise ValueError(f"URI template {v!r} must start with '{{root}}', 'file://' or 's3://'")
        return v

    @field_validator("features_query", "labels_query")
    @classmethod
    def _query_ok(cls, v: str | None) -> str | None:
        if v is None:
            return v
        params = set(_PARAM.findall(v))
        if params != {"date"}:
            raise ValueError(
                f"a query must take the day as %(date)s and no other parameter (found {sorted(params) or 'none'}); "
                "write a literal % as %%"
            )
        return v

    @field_validator("conn_id")
    @classmethod
    def _conn_id_ok(cls, v: str | None) -> str | None:
        if v is not None and not _CONN_ID.match(v):
            raise ValueError(f"landing.conn_id {v!r} is not an Airflow connection id (letters, digits, _ . -)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Landing:
        files = (self.features_uri, self.labels_uri)
        sql = (self.conn_id, self.features_query, self.labels_query)
        if any(sql):
            if not all(sql) or any(files):
                raise ValueError(
                    "a SQL source needs landing.conn_id, landing.features_query and landing.labels_query, "
                    "and no features_uri/labels_uri"
                )
        elif not all(files):
            raise ValueError("landing needs features_uri and labels_uri (files) or conn_id with both queries (SQL)")
        return self

    @property
    def source(self) -> Literal["files", "sql"]:
        return "sql" if self.conn_id else "files"

    def features(self, root: str, day: str) -> str:
        return str(self.features_uri).format(root=root.rstrip("/"), date=day)

    def labels(self, root: str, day: str) -> str:
        return str(self.labels_uri).format(root=root.rstrip("/"), date=day)


class Training(Frozen):
    algorithm: str = estimators.DEFAULT_ALGORITHM
    hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    window_days: int = Field(default=28, ge=2, le=730)
    holdout_days: int = Field(default=3, ge=1, le=90)
    min_training_rows: int = Field(default=500, ge=10)
    decision_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    random_seed: int = 42
    # Rows of the training data saved with the model as the monitoring reference.
    reference_sample_rows: int = Field(default=5000, ge=100)
    # A hyperparameter search (trials as mapped tasks) before the final fit; see spec/search.py.
    search: Search | None = None

    @field_validator("algorithm")
    @classmethod
    def _algorithm_ok(cls, v: str, info: ValidationInfo) -> str:
        kind = target_type_of(info)
        if kind is not None:
            estimators.resolve(kind, v)
        return v

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameters_ok(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        kind = target_type_of(info)
        if kind is None:
            return v
        for name, params in v.items():
            try:
                estimators.check_hyperparameters(estimators.resolve(kind, name), params, kind)
            except ValueError as exc:
                raise ValueError(f"training.hyperparameters.{name}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _holdout_fits(self) -> Training:
        if self.holdout_days >= self.window_days:
            raise ValueError(
                f"holdout_days ({self.holdout_days}) must be smaller than window_days ({self.window_days})"
            )
        return self

    @model_validator(mode="after")
    def _search_fits(self, info: ValidationInfo) -> Training:
        kind = target_type_of(info)
        if self.search is not None and kind is not None:
            check_search(self.search, estimators.resolve(kind, self.algorithm), self.window_days, self.holdout_days)
        return self


class Gate(Frozen):
    """Promotion rules: absolute floors, and the largest regression allowed against the champion."""

    floors: dict[Metric, float] = Field(default_factory=dict)
    max_regression: dict[Metric, float] = Field(default_factory=dict)

    _non_negative = field_validator("max_regression")(lambda cls, v: non_negative_metrics(v, "max_regression"))


class Promotion(Frozen):
    """How ``@champion`` may move after the gate passes."""

    approval: bool = False  # True: a person approves each promotion in the Airflow UI first
    approval_timeout_hours: float = Field(default=24, gt=0, le=24 * 14)  # unanswered: not promoted
    # gate: the offline gate moves @champion; shadow: a passing challenger is scored beside the champion
    # on live days first, and promoted only when it wins on ``shadow_days`` labelled days.
    mode: Literal["gate", "shadow"] = "gate"
    shadow_days: int = Field(default=7, ge=1, le=90)


class Schedules(Frozen):
    training: str | None = "0 3 * * 1"
    scoring: str | None = "30 4 * * *"


class Scoring(Frozen):
    """How the nightly scoring DAG writes ``<schema>.<model>_scores`` in the warehouse."""

    # The published schema analysts read; staging lives in ``<schema>_staging``.
    schema_name: SafeName = Field(default="nightshift", alias="schema")
    entity_key_type: Literal["bigint", "text"] = "bigint"
    # Rows per record batch read, predicted and copied at a time: memory is bounded by it, not the day.
    batch_rows: int = Field(default=100_000, ge=1_000, le=2_000_000)
    # Days with more rows are split into shards of about this size, scored by parallel mapped tasks
    # (a multiple of shard_slots of them). Each shard task pays ~3 s to start and load the model, so
    # shards are large: 10M rows on 2 slots are 2 shards in one wave.
    shard_rows: int = Field(default=5_000_000, ge=10_000)
    # The scoring pool's slots: a day of several shards gets a multiple of this many, so no wave idles a slot.
    shard_slots: int = Field(default=2, ge=1, le=64)
    # Threads one shard's model may use; empty: this host's cores divided by the shards running at once.
    model_threads: int | None = Field(default=None, ge=1, le=256)
    # Share of a day's rows that may break row-level rules (and go to quarantine) before the run fails.
    max_quarantine_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    # The GX input suite reads at most this many rows of the day (the whole day when smaller).
    validation_sample_rows: int = Field(default=1_000_000, ge=1_000)
    # A run that has not shown a sign of life for this long loses its claim on a score date.
    lease_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    _schema_ok = field_validator("schema_name")(lambda cls, v: check_safe_name(v, "scoring.schema"))


class Monitoring(Frozen):
    """Drift and realised-performance monitoring, and when they ask for retraining."""

    # Evidently reads at most this many rows of the day (an even, seeded sample; the whole day if smaller).
    sample_rows: int = Field(default=100_000, ge=1_000)
    # Retrain when at least this share of the features drift (Evidently's per-feature verdicts).
    drift_share: float = Field(default=0.3, gt=0.0, le=1.0)
    # Realised metrics (once labels land) below these floors ask for retraining ...
    performance_floors: dict[Metric, float] = Field(default_factory=dict)
    # ... and so does a fall of more than this below the champion's own holdout metric.
    max_decay: dict[Metric, float] = Field(default_factory=dict)
    # A labelled day needs at least this many scored rows with labels to be judged.
    min_labelled_rows: int = Field(default=200, ge=10)
    # On-call is told when the day's scores are not published this long after the run was queued.
    scores_due_minutes: int | None = Field(default=120, ge=1, le=24 * 60)
    # Categorical features (derived ones included) whose values are monitored one by one: drift share and
    # realised metrics per value; floors and max_decay apply to each value with ``min_slice_rows`` rows.
    slices: tuple[SafeName, ...] = ()
    min_slice_rows: int = Field(default=200, ge=10)

    _non_negative = field_validator("max_decay")(lambda cls, v: non_negative_metrics(v, "max_decay"))


class Alerts(Frozen):
    """Who hears about failures. Mail needs the Airflow connection ``nightshift_smtp``; Slack needs
    ``nightshift_slack`` (a Slack incoming-webhook connection). Every alert is also a row in
    ``monitoring.alerts`` and a line in the task log."""

    email_to: tuple[str, ...] = ()

    @field_validator("email_to")
    @classmethod
    def _emails(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for address in v:
            if not re.fullmatch(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+", address):
                raise ValueError(f"alerts.email_to: {address!r} is not an e-mail address")
        return v


class Runs(Frozen):
    """How Airflow retries this model's tasks, and how long each may run."""

    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_seconds: int = Field(default=120, ge=1, le=3600)
    timeout_minutes: dict[str, int] = Field(default_factory=dict)

    @field_validator("timeout_minutes")
    @classmethod
    def _timeouts(cls, v: dict[str, int]) -> dict[str, int]:
        allowed = ", ".join(TIMEOUT_DEFAULTS)
        for kind, minutes in v.items():
            if kind not in TIMEOUT_DEFAULTS:
                raise ValueError(f"runs.timeout_minutes: unknown task kind {kind!r}; allowed: {allowed}")
            if not 1 <= minutes <= 24 * 60:
                raise ValueError(f"runs.timeout_minutes.{kind} is {minutes}; allowed: 1 to 1440 (minutes)")
        return v

    def timeout_for(self, kind: str) -> int:
        """The minutes a task of ``kind`` may run (the spec's value, or the kind's default)."""
        return self.timeout_minutes.get(kind, TIMEOUT_DEFAULTS[kind])
