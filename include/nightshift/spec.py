"""Model specs: one YAML file per model under ``include/models/``, loaded into frozen objects.

A spec is the only thing a data team writes to add a model; the DAG factory, the GX suites and the
training code all read it. Every error names the file, the key, the observed value and the rule.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from include.nightshift.errors import SpecError

# Names that become SQL identifiers, MLflow model names, URI segments or Airflow ids.
SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SAFE_NAME_RULE = "lower-case letter first, then lower-case letters, digits or '_', at most 40 characters"

Algorithm = Literal["logistic_regression", "random_forest", "hist_gradient_boosting"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)

# Metrics the gate understands and which direction is better.
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "log_loss": False,
    "brier": False,
}
Metric = Literal["roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "brier"]


def check_safe_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe identifier, else raise ``ValueError`` naming the rule."""
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not allowed: {SAFE_NAME_RULE}")
    return value


def non_negative_metrics(v: dict[str, float], key: str) -> dict[str, float]:
    """``v`` if every allowed change in it is >= 0, else ``ValueError`` naming ``key.<metric>``."""
    for metric, allowed in v.items():
        if allowed < 0:
            raise ValueError(f"{key}.{metric} is {allowed}; it must be >= 0")
    return v


SafeName = Annotated[str, Field(description=SAFE_NAME_RULE)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Feature(_Frozen):
    """One input column of the model."""

    name: SafeName
    type: Literal["int", "float", "category"]
    description: str = ""
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    # Share of rows that may break the range / category rule before raw validation fails.
    mostly: float = Field(default=1.0, ge=0.0, le=1.0)

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


class Target(_Frozen):
    name: SafeName
    label_delay_days: int = Field(ge=0, le=365)

    _name_ok = field_validator("name")(lambda cls, v: check_safe_name(v, "target name"))


class Landing(_Frozen):
    """Where the daily partitions arrive. ``{root}`` and ``{date}`` (YYYY-MM-DD) are substituted."""

    features_uri: str
    labels_uri: str

    @field_validator("features_uri", "labels_uri")
    @classmethod
    def _template_ok(cls, v: str) -> str:
        if "{date}" not in v:
            raise ValueError(f"URI template {v!r} must contain '{{date}}' so each day is its own partition")
        if not (v.startswith("{root}") or v.startswith(("file://", "s3://"))):
            raise ValueError(f"URI template {v!r} must start with '{{root}}', 'file://' or 's3://'")
        return v

    def features(self, root: str, day: str) -> str:
        return self.features_uri.format(root=root.rstrip("/"), date=day)

    def labels(self, root: str, day: str) -> str:
        return self.labels_uri.format(root=root.rstrip("/"), date=day)


class Training(_Frozen):
    algorithm: Algorithm = "hist_gradient_boosting"
    hyperparameters: dict[Algorithm, dict[str, Any]] = Field(default_factory=dict)
    window_days: int = Field(default=28, ge=2, le=730)
    holdout_days: int = Field(default=3, ge=1, le=90)
    min_training_rows: int = Field(default=500, ge=10)
    decision_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    random_seed: int = 42
    # Rows of the training data saved with the model as the monitoring reference.
    reference_sample_rows: int = Field(default=5000, ge=100)

    @model_validator(mode="after")
    def _holdout_fits(self) -> Training:
        if self.holdout_days >= self.window_days:
            raise ValueError(
                f"holdout_days ({self.holdout_days}) must be smaller than window_days ({self.window_days})"
            )
        return self


class Gate(_Frozen):
    """Promotion rules: absolute floors, and the largest regression allowed against the champion."""

    floors: dict[Metric, float] = Field(default_factory=dict)
    max_regression: dict[Metric, float] = Field(default_factory=dict)

    _non_negative = field_validator("max_regression")(lambda cls, v: non_negative_metrics(v, "max_regression"))


class Promotion(_Frozen):
    """How ``@champion`` may move after the gate passes."""

    approval: bool = False  # True: a person approves each promotion in the Airflow UI first
    approval_timeout_hours: float = Field(default=24, gt=0, le=24 * 14)  # unanswered: not promoted


class Schedules(_Frozen):
    training: str | None = "0 3 * * 1"
    scoring: str | None = "30 4 * * *"


class Scoring(_Frozen):
    """How the nightly scoring DAG writes ``<schema>.<model>_scores`` in the warehouse."""

    # The published schema analysts read; staging lives in ``<schema>_staging``.
    schema_name: SafeName = Field(default="nightshift", alias="schema")
    entity_key_type: Literal["bigint", "text"] = "bigint"
    # Rows per record batch read, predicted and copied at a time: memory is bounded by it, not the day.
    batch_rows: int = Field(default=100_000, ge=1_000, le=2_000_000)
    # Days with more rows are split into shards of about this size, scored by parallel mapped tasks.
    shard_rows: int = Field(default=2_000_000, ge=10_000)
    # Share of a day's rows that may break row-level rules (and go to quarantine) before the run fails.
    max_quarantine_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    # The GX input suite reads at most this many rows of the day (the whole day when smaller).
    validation_sample_rows: int = Field(default=1_000_000, ge=1_000)
    # A run that has not shown a sign of life for this long loses its claim on a score date.
    lease_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    _schema_ok = field_validator("schema_name")(lambda cls, v: check_safe_name(v, "scoring.schema"))


class Monitoring(_Frozen):
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

    _non_negative = field_validator("max_decay")(lambda cls, v: non_negative_metrics(v, "max_decay"))


class Alerts(_Frozen):
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


class Runs(_Frozen):
    """How Airflow retries this model's tasks."""

    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_seconds: int = Field(default=120, ge=1, le=3600)


class ModelSpec(_Frozen):
    """A model, as declared in ``include/models/<name>.yaml``."""

    name: SafeName
    description: str = ""
    owner: str = "nightshift"
    tags: tuple[str, ...] = ()
    entity_key: SafeName
    landing: Landing
    features: tuple[Feature, ...] = Field(min_length=1)
    target: Target
    training: Training = Training()
    gate: Gate = Gate()
    promotion: Promotion = Promotion()
    schedules: Schedules = Schedules()
    scoring: Scoring = Scoring()
    monitoring: Monitoring = Monitoring()
    alerts: Alerts = Alerts()
    runs: Runs = Runs()

    _name_ok = field_validator("name")(lambda cls, v: check_safe_name(v, "model name"))
    _key_ok = field_validator("entity_key")(lambda cls, v: check_safe_name(v, "entity_key"))

    @model_validator(mode="after")
    def _columns_distinct(self) -> ModelSpec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {dupes}")
        for reserved in (self.entity_key, self.target.name, "feature_date"):
            if reserved in names:
                raise ValueError(
                    f"{reserved!r} is the entity key, the target or 'feature_date' and cannot be a feature"
                )
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.type in ("int", "float")]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "category"]

    @property
    def label_delay(self) -> timedelta:
        return timedelta(days=self.target.label_delay_days)

    def hyperparameters(self, algorithm: str) -> dict[str, Any]:
        return next((dict(p) for name, p in self.training.hyperparameters.items() if name == algorithm), {})


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid model spec ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        # Show the observed value for the key when there is one.
        value = e.get("input", "<missing>") if e["type"] != "missing" else "<missing>"
        if isinstance(value, dict) and e["type"] not in ("missing",):
            value = "{...}"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - key '{loc}': {msg} (got {value!r})")
    return "\n".join(lines)


def load_spec(path: str | Path) -> ModelSpec:
    """Load and validate one spec file.

    Args:
        path: A YAML file.

    Returns:
        The frozen, validated spec.

    Raises:
        SpecError: The file cannot be read, is not YAML, or breaks a rule; the message names the file,
            the key, the observed value and the rule.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read model spec: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a model spec must be a mapping, got {type(raw).__name__}")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_error(path, exc)) from None
    if spec.name != path.stem:
        raise SpecError(f"{path}: key 'name' is {spec.name!r} but the file is named {path.name!r}; they must match")
    return spec


def load_specs(directory: str | Path) -> list[ModelSpec]:
    """Load every ``*.yaml`` spec in ``directory``, sorted by name. Raises on the first bad file."""
    return [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]


DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def models_dir() -> Path:
    """Where the specs are: ``NIGHTSHIFT_MODELS_DIR`` if set, else ``include/models``."""
    return Path(os.environ.get("NIGHTSHIFT_MODELS_DIR") or DEFAULT_MODELS_DIR)


def load_model(name: str) -> ModelSpec:
    """Load the spec of model ``name`` from :func:`models_dir`."""
    try:
        check_safe_name(name, "model name")
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return load_spec(models_dir() / f"{name}.yaml")
