"""Operators that land CSV files and SQL query results as Parquet, for models whose data arrives that way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nightshift_airflow.operators.base import DataOperator, NightshiftOperator

if TYPE_CHECKING:
    from datetime import date

    from airflow.sdk import Context

    from include.nightshift.sources import Kind, Landed
    from include.nightshift.spec import ModelSpec


class _Land(DataOperator, NightshiftOperator):
    """Land days of a model's data (its ``landing`` says whether it is CSV files or SQL queries).

    Args:
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI of the runs' files, where landed partitions go (templated).
    """

    template_fields: tuple[str, ...] = ("model", "landing_root", "work_root")
    ui_color = "#e3f2fd"

    def __init__(self, *, landing_root: str, work_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root
        self.work_root = work_root

    def land(self, spec: ModelSpec, kinds: tuple[Kind, ...], days: list[date]) -> dict[str, Any]:
        from include.nightshift.sources import land_days
        from nightshift_airflow.hooks import source_connection

        conn_id = spec.landing.conn_id
        connect = (lambda: source_connection(str(conn_id))) if conn_id else None
        landed: list[Landed] = land_days(self.storage, spec, self.paths, kinds, days, connect)
        self._record_lineage(spec, kinds, landed)
        rows = {kind: sum(item.rows for item in landed if item.kind == kind) for kind in kinds}
        self.log.info("landed %d partition(s) of %s: %s", len(landed), spec.name, rows)
        return {"partitions": len(landed), "rows": rows, "uris": [item.uri for item in landed][-4:]}

    def _record_lineage(self, spec: ModelSpec, kinds: tuple[Kind, ...], landed: list[Landed]) -> None:
        """In: the CSV files, or the tables the SQL queries read; out: the landed Parquet partitions."""
        from airflow.sdk import BaseHook

        from include.nightshift.lineage import file_dataset, query_tables

        for item in landed:
            self.lineage.wrote(file_dataset(item.uri))
            if spec.landing.source != "sql":
                self.read_file(item.source)
        if spec.landing.source == "sql" and landed:
            c = BaseHook.get_connection(str(spec.landing.conn_id))
            scheme = "postgres" if c.conn_type in ("postgres", "postgresql") else str(c.conn_type)
            for kind in kinds:
                query = spec.landing.features_query if kind == "features" else spec.landing.labels_query
                for table in query_tables(str(query), scheme, str(c.host), c.port, str(c.schema or "")):
                    self.lineage.read(table)


class LandWindowOperator(_Land):
    """Land the features and labels of every day of the training window.

    Args:
        resolved: The output of ``ResolveTrainingRunOperator`` (templated).
    """

    template_fields = ("model", "resolved", "landing_root", "work_root")

    def __init__(self, *, resolved: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.datasets import Window

        return self.land(spec, ("features", "labels"), Window.from_dict(self.resolved["window"]).days)


class LandScoringDayOperator(_Land):
    """Land the features of the day a scoring run scores (the ``run_date`` param, else the run's date)."""

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from nightshift_airflow.operators.scoring import score_date

        return self.land(spec, ("features",), [score_date(context)])
