"""Operators of the scoring DAG. Each calls the scoring / warehouse library and pushes small results."""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import MlflowModelVersionLink
from nightshift_airflow.operators.base import NightshiftOperator, run_date

if TYPE_CHECKING:
    from datetime import date

    from airflow.sdk import Context
    from psycopg2.extensions import connection

    from include.nightshift.spec import ModelSpec
    from include.nightshift.warehouse import Constants

# DAG run states in which a run may still write; a claim held by a run in any other state is stale.
LIVE_RUN_STATES = ("queued", "running")


def _connect(postgres_conn_id: str) -> connection:
    from nightshift_airflow.hooks import warehouse_connection

    return warehouse_connection(postgres_conn_id)


def _constants(resolved: dict[str, Any]) -> Constants:
    from datetime import date

    from include.nightshift.warehouse import Constants

    return Constants(
        day=date.fromisoformat(resolved["score_date"]),
        model_name=resolved["model_name"],
        model_version=int(resolved["model_version"]),
        mlflow_run_id=resolved["mlflow_run_id"],
        dag_run_id=resolved["dag_run_id"],
    )


def score_date(context: Context) -> date:
    """The day a scoring run is for: the ``run_date`` param, else the run's own date. Never "latest"."""
    from datetime import date

    from include.nightshift.errors import ParamsError

    value = context["params"].get("run_date")
    if not value:
        return run_date(context)
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ParamsError(f"param 'run_date' must be a date YYYY-MM-DD, got {value!r}") from None


class ResolveScoringRunOperator(NightshiftOperator):
    """Pin ``@champion``, check the day's input, create the tables, and claim the score date.

    Returns the day's shards (the scoring task is mapped over them) and pushes the run's facts
    (date, input, pinned model version) to XCom key ``run``. Fails at once (no retry) when the
    model has no ``@champion`` or the day's file is missing, empty or has the wrong columns;
    retries while another live run is writing the same date.

    Args:
        landing_root: Root URI of the landing partitions (templated).
        mlflow_conn_id: The MLflow connection.
        postgres_conn_id: The warehouse.
        aws_conn_id: Credentials for ``s3://`` URIs.
    """

    template_fields = ("model", "landing_root")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        landing_root: str,
        mlflow_conn_id: str = "mlflow_default",
        postgres_conn_id: str = "postgres_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root
        self.mlflow_conn_id = mlflow_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id

    def run(self, context: Context, spec: ModelSpec) -> list[dict[str, Any]]:
        from include.nightshift import scoring, warehouse
        from include.nightshift.registry import require_champion
        from nightshift_airflow.hooks import MlflowHook, storage_from_connection

        day = score_date(context)
        hook = MlflowHook(self.mlflow_conn_id)
        champion = require_champion(hook.get_conn(), spec.name)
        context["ti"].xcom_push(
            key=MlflowModelVersionLink.url_key, value=hook.model_version_url(spec.name, champion.version)
        )
        uri = spec.landing.features(self.landing_root, day.isoformat())
        total, shards = scoring.inspect_input(storage_from_connection(self.aws_conn_id), spec, uri)
        run_id = context["run_id"]
        dag_id = context["dag"].dag_id
        ti = context["ti"]

        def holder_alive(holder: str) -> bool:
            try:
                state = ti.get_dagrun_state(dag_id=dag_id, run_id=holder)  # type: ignore[attr-defined]
            except Exception as exc:  # the holder is not a run of this DAG (any more): nothing can renew it
                self.log.warning("holder %s of the claim is not a run of %s (%s)", holder, dag_id, exc)
                return False
            return str(state) in LIVE_RUN_STATES

        with closing(_connect(self.postgres_conn_id)) as conn:
            tables = warehouse.ensure_tables(conn, spec)
            warehouse.claim(conn, tables, day, run_id, spec.scoring.lease_timeout_minutes, holder_alive)
        self.log.info(
            "scoring %s for %s with @champion = version %s; %d input rows in %d shard(s): %s",
            spec.name,
            day,
            champion.version,
            total,
            len(shards),
            uri,
        )
        # The shard list is the return value because Airflow maps only over it; the run's facts
        # go to XCom key "run".
        context["ti"].xcom_push(
            key="run",
            value={
                "score_date": day.isoformat(),
                "input_uri": uri,
                "input_rows": total,
                "model_name": spec.name,
                "model_version": str(champion.version),
                "model_uri": f"models:/{spec.name}/{champion.version}",
                "mlflow_run_id": champion.run_id,
                "dag_run_id": run_id,
            },
        )
        return [s.as_dict() for s in shards]


class ScoreShardOperator(NightshiftOperator):
    """Score one shard of the day into its staging tables (mapped: one task instance per shard).

    Args:
        resolved: XCom ``run`` of ``ResolveScoringRunOperator`` (templated).
        shard: One shard, as returned by ``ResolveScoringRunOperator`` (templated; mapped).
    """

    template_fields = ("model", "resolved", "shard")
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        resolved: Any,
        shard: Any,
        mlflow_conn_id: str = "mlflow_default",
        postgres_conn_id: str = "postgres_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved
        self.shard = shard
        self.mlflow_conn_id = mlflow_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        import mlflow

        from include.nightshift import scoring, warehouse
        from nightshift_airflow.hooks import MlflowHook, storage_from_connection

        consts = _constants(self.resolved)
        tables = warehouse.Tables.for_spec(spec)
        shard = scoring.Shard.from_dict(self.shard)
        hook = MlflowHook(self.mlflow_conn_id)
        hook.get_conn()  # sets basic-auth credentials, if any
        mlflow.set_tracking_uri(hook.tracking_uri)
        mlflow.set_registry_uri(hook.tracking_uri)
        # Pinned by version at the start of the run: a promotion meanwhile does not change this run.
        model = mlflow.sklearn.load_model(self.resolved["model_uri"])
        conns = [_connect(self.postgres_conn_id) for _ in range(3)]
        try:
            lease = warehouse.Lease(conns[2], tables, consts.day, consts.dag_run_id)
            lease.heartbeat(force=True)
            result = scoring.score_shard(
                conns[0],
                conns[1],
                storage_from_connection(self.aws_conn_id),
                spec,
                tables,
                consts,
                model,
                self.resolved["input_uri"],
                shard,
                heartbeat=lease.heartbeat,
            )
        finally:
            for c in conns:
                c.close()
        return result.as_dict()


class AssembleScoresOperator(NightshiftOperator):
    """Check the counts and the quarantine threshold, and build the day's table from the shards.

    Above ``scoring.max_quarantine_fraction`` the run fails: the quarantined rows are kept in
    ``<schema>.<model>_quarantine`` under this DAG run, and no scores are published.

    Args:
        resolved: XCom ``run`` of ``ResolveScoringRunOperator`` (templated).
        shards: The outputs of the mapped ``ScoreShardOperator`` (templated).
    """

    template_fields = ("model", "resolved", "shards")

    def __init__(self, *, resolved: Any, shards: Any, postgres_conn_id: str = "postgres_default", **kwargs: Any):
        super().__init__(**kwargs)
        self.resolved = resolved
        self.shards = shards
        self.postgres_conn_id = postgres_conn_id

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from collections import Counter

        from include.nightshift import warehouse
        from include.nightshift.errors import DataValidationError

        consts = _constants(self.resolved)
        tables = warehouse.Tables.for_spec(spec)
        results = sorted(self.shards, key=lambda r: r["shard"])
        n = len(results)
        input_rows = sum(r["input_rows"] for r in results)
        scored = sum(r["scored_rows"] for r in results)
        by_rule: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        for r in results:
            by_rule.update(r["quarantined"])
            for rule, keys in r["examples"].items():
                examples.setdefault(rule, []).extend(keys[: 5 - len(examples.get(rule, []))])
        quarantined = sum(by_rule.values())
        expected = int(self.resolved["input_rows"])
        with closing(_connect(self.postgres_conn_id)) as conn:
            if input_rows != expected or scored + quarantined != expected:
                warehouse.release(conn, tables, consts.day, consts.dag_run_id)
                raise DataValidationError(
                    f"row counts do not add up for {spec.name} {consts.day}: the file has {expected} rows, the "
                    f"shards read {input_rows}, scored {scored} and quarantined {quarantined}. Nothing was "
                    "published; the input file probably changed during the run. Re-run the date."
                )
            fraction = quarantined / expected
            limit = spec.scoring.max_quarantine_fraction
            if fraction > limit:
                kept = warehouse.publish_quarantine_only(conn, tables, consts, n)
                rules = "\n  - ".join(
                    f"{rule}: {count} rows, e.g. {spec.entity_key} {', '.join(examples.get(rule, []))}"
                    for rule, count in by_rule.most_common()
                )
                raise DataValidationError(
                    f"{quarantined} of {expected} input rows of {spec.name} for {consts.day} "
                    f"({fraction:.2%}) broke row-level rules; scoring.max_quarantine_fraction is {limit:.2%}. "
                    f"No scores were published; the scores of {consts.day} are unchanged.\n  - {rules}\n"
                    f"The {kept} rows are in {tables.schema}.{tables.quarantine}: SELECT rule, count(*) FROM "
                    f"{tables.schema}.{tables.quarantine} WHERE dag_run_id = '{consts.dag_run_id}' GROUP BY rule;"
                )
            try:
                staged = warehouse.assemble(conn, tables, consts, n)
            except DataValidationError:
                warehouse.release(conn, tables, consts.day, consts.dag_run_id)
                raise
            loaded = warehouse.count_rows(conn, tables.staging_schema, staged)
        if loaded != scored:
            raise RuntimeError(f"staged table {tables.staging_schema}.{staged} holds {loaded} rows, expected {scored}")
        self.log.info(
            "%s %s: %d rows scored, %d quarantined (%s) in %d shard(s)",
            spec.name,
            consts.day,
            scored,
            quarantined,
            dict(by_rule) or "none",
            n,
        )
        return {
            "staged_table": staged,
            "staging_schema": tables.staging_schema,
            "shards": n,
            "input_rows": expected,
            "scored_rows": scored,
            "quarantined_rows": quarantined,
            "quarantined_by_rule": dict(by_rule),
        }


class PublishScoresOperator(NightshiftOperator):
    """Swap the validated day into ``<schema>.<model>_scores`` atomically and emit the Asset event.

    Args:
        resolved: XCom ``run`` of ``ResolveScoringRunOperator`` (templated).
        scored: The output of ``AssembleScoresOperator`` (templated).
    """

    template_fields = ("model", "resolved", "scored")

    def __init__(self, *, resolved: Any, scored: Any, postgres_conn_id: str = "postgres_default", **kwargs: Any):
        super().__init__(**kwargs)
        self.resolved = resolved
        self.scored = scored
        self.postgres_conn_id = postgres_conn_id

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import warehouse

        consts = _constants(self.resolved)
        tables = warehouse.Tables.for_spec(spec)
        with closing(_connect(self.postgres_conn_id)) as conn:
            out = warehouse.publish(conn, tables, consts, self.scored["staged_table"], int(self.scored["shards"]))
        summary = {
            **out,
            "score_date": consts.day.isoformat(),
            "rows": self.scored["scored_rows"],
            "quarantined_rows": self.scored["quarantined_rows"],
            "model_version": consts.model_version,
            "dag_run_id": consts.dag_run_id,
        }
        for asset in self.outlets:
            context["outlet_events"][asset].extra = summary
        self.log.info(
            "published %(rows)d rows of %(score_date)s into %(partition)s (model version %(model_version)s)", summary
        )
        return summary
