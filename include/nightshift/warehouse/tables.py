"""The names and columns of one model's scored tables, validated once.

For a model ``churn`` and the spec's ``scoring.schema`` (default ``nightshift``):

- ``nightshift.churn_scores``: declaratively partitioned by ``score_date``, one partition per day
  (``churn_scores_p20261120``); primary key (entity key, score_date), which serves look-ups by entity
  and the latest-score view. (A "top scores of a day" index doubled the cost of a load; a day's top N
  is a sort of one partition.)
- ``nightshift.churn_latest_scores``: a view with each entity's latest score.
- ``nightshift.churn_quarantine``: rows that broke a row-level rule, with the rule and the DAG run.
- ``nightshift_staging``: where a run loads its rows before they become visible (one scores table per
  run and day, a ledger of the shards loaded, a quarantine table per shard), and the lease table.

Every identifier comes from a validated spec and reaches SQL only through ``psycopg2.sql.Identifier``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.pg import sql
from include.nightshift.spec import check_safe_name

if TYPE_CHECKING:
    from datetime import date

    from include.nightshift.spec import ModelSpec

Column = tuple[str, str, str]  # (name, type, comment)

# What a model of each target type writes per row, after the entity key and score_date. These are
# loaded by COPY; every other column is the same for the whole day and comes from a default.
OUTPUT_COLUMNS: dict[str, tuple[Column, ...]] = {
    "binary": (
        ("score", "double precision NOT NULL", "Predicted probability of the positive class, 0 to 1."),
        ("predicted_label", "smallint NOT NULL", "1 when score >= the spec's decision_threshold, else 0."),
    ),
    "multiclass": (
        ("predicted_class", "text NOT NULL", "The most probable class (one of the spec's target.classes)."),
        ("score", "double precision NOT NULL", "Probability of predicted_class, 0 to 1."),
        ("class_scores", "jsonb NOT NULL", "Probability of every class: {class: probability}."),
    ),
    "regression": (("prediction", "double precision NOT NULL", "The predicted value of the target."),),
}
LINEAGE_COLUMNS: tuple[Column, ...] = (
    ("model_name", "text NOT NULL", "Registered MLflow model name."),
    ("model_version", "integer NOT NULL", "MLflow model version that held @champion when the run started."),
    ("mlflow_run_id", "text NOT NULL", "MLflow run that trained that version."),
    ("dag_run_id", "text NOT NULL", "Airflow DAG run that wrote this day."),
    ("scored_at", "timestamptz NOT NULL", "When the rows were loaded."),
)
DATE_COLUMN: Column = ("score_date", "date NOT NULL", "The day of the features that were scored (the partition key).")
# The binary model's columns after the entity key, as they always were.
SCORE_COLUMNS: tuple[Column, ...] = (DATE_COLUMN, *OUTPUT_COLUMNS["binary"], *LINEAGE_COLUMNS)
COPY_COLUMNS = tuple(c[0] for c in OUTPUT_COLUMNS["binary"])
# The columns whose staging default is the day's constant (dropped once the day is assembled).
CONSTANT_COLUMNS = ("score_date", "model_name", "model_version", "mlflow_run_id", "dag_run_id", "scored_at")
QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("score_date", "date NOT NULL"),
    ("entity_key", "text"),
    ("rule", "text NOT NULL"),
    ("row", "jsonb NOT NULL"),
    ("dag_run_id", "text NOT NULL"),
    ("quarantined_at", "timestamptz NOT NULL DEFAULT now()"),
)


@dataclass(frozen=True)
class Tables:
    """Every identifier the scoring path uses for one model, validated once."""

    model: str
    schema: str
    key: str
    key_type: str
    target_type: str = "binary"
    # The challenger's shadow tables: ``model`` is then ``<model>_shadow`` (a model name may not end in
    # ``_shadow``), so its scores, partitions, staging tables and leases never meet the champion's.
    shadow: bool = False

    def __post_init__(self) -> None:
        for what, value in (("model name", self.model), ("scoring.schema", self.schema), ("entity_key", self.key)):
            check_safe_name(value, what)
        if self.key_type not in ("bigint", "text"):
            raise ValueError(f"scoring.entity_key_type {self.key_type!r} is not one of bigint, text")
        if self.target_type not in OUTPUT_COLUMNS:
            raise ValueError(f"target.type {self.target_type!r} is not one of {', '.join(OUTPUT_COLUMNS)}")

    @classmethod
    def for_spec(cls, spec: ModelSpec, shadow: bool = False) -> Tables:
        """The tables of ``spec``; with ``shadow``, those of its challenger in shadow (``<model>_shadow_scores``)."""
        model = f"{spec.name}_shadow" if shadow else spec.name
        key, key_type = spec.entity_key, spec.scoring.entity_key_type
        return cls(model, spec.scoring.schema_name, key, key_type, spec.target.type, shadow)

    @property
    def output_columns(self) -> tuple[Column, ...]:
        return OUTPUT_COLUMNS[self.target_type]

    @property
    def score_columns(self) -> tuple[Column, ...]:
        """The published columns after the entity key."""
        return (DATE_COLUMN, *self.output_columns, *LINEAGE_COLUMNS)

    @property
    def copy_columns(self) -> tuple[str, ...]:
        """The columns COPY loads per row: the entity key and the outputs."""
        return (self.key, *(c[0] for c in self.output_columns))

    @property
    def staging_schema(self) -> str:
        return f"{self.schema}_staging"

    @property
    def scores(self) -> str:
        return f"{self.model}_scores"

    @property
    def latest(self) -> str:
        return f"{self.model}_latest_scores"

    @property
    def quarantine(self) -> str:
        return f"{self.model}_quarantine"

    @property
    def leases(self) -> Any:
        """The lease table (one row per claimed model and score date), quoted."""
        return self.ident(self.staging_schema, "score_leases")

    def partition(self, day: date) -> str:
        return f"{self.model}_scores_p{day:%Y%m%d}"

    def staging(self, day: date, run_id: str, kind: str) -> str:
        """A staging table of one run and day, ``<model>_<yyyymmdd>_<digest>_<kind>``.

        ``kind`` is ``s`` (the day's scores, loaded by every shard), ``l`` (the ledger of the shards
        loaded) or ``q<shard>`` (one shard's quarantine).
        """
        digest = hashlib.sha1(run_id.encode()).hexdigest()[:6]
        return f"{self.model}_{day:%Y%m%d}_{digest}_{kind}"

    def ident(self, schema: str, name: str) -> Any:
        return sql().Identifier(schema, name)

    def published(self, name: str) -> Any:
        """``<schema>.<name>``, quoted."""
        return self.ident(self.schema, name)

    def staged(self, name: str) -> Any:
        """``<schema>_staging.<name>``, quoted."""
        return self.ident(self.staging_schema, name)


def columns_ddl(t: Tables) -> Any:
    """The scores table's column list: the entity key, then :data:`SCORE_COLUMNS`."""
    s = sql()
    cols = [s.SQL("{} {} NOT NULL").format(s.Identifier(t.key), s.SQL(t.key_type))]
    cols += [s.SQL("{} {}").format(s.Identifier(n), s.SQL(ty)) for n, ty, _ in t.score_columns]
    return s.SQL(", ").join(cols)
