"""Operators of the scoring DAG. Each calls the scoring / warehouse library and pushes small results."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from functools import cached_property
from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import MlflowModelVersionLink
from nightshift_airflow.operators.base import DataOperator, NightshiftOperator, run_date

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import date

    from airflow.sdk import Context

    from include.nightshift.scoring import ScoringRun
    from include.nightshift.spec import ModelSpec
    from include.nightshift.warehouse import Tables

# DAG run states in which a run may still write; a claim held by a run in any other state is stale.
LIVE_RUN_STATES = ("queued", "running")


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


class ResolveScoringRunOperator(DataOperator, NightshiftOperator):
    """Pin ``@champion``, check the day's input against its contract, create the tables, claim the date.

    Returns the day's shards (the scoring task is mapped over them) and pushes the run's facts
    (date, input, pinned model version) to XCom key ``run``. Fails at once (no retry) when the
    model has no ``@champion``, or the day's file is missing, empty, or lacks what the champion's
    contract needs; retries while another live run is writing the same date.

    Args:
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI of the runs' files (where CSV and SQL sources were landed) (templated).
    """

    template_fields = ("model", "landing_root", "work_root")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(self, *, landing_root: str, work_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landing_root = landing_root
        self.work_root = work_root

    def run(self, context: Context, file_spec: ModelSpec) -> list[dict[str, Any]]:
        from include.nightshift import scoring, sources, warehouse
        from include.nightshift.contract import load_contract
        from include.nightshift.registry import require_champion

        day = score_date(context)
        champion = require_champion(self.mlflow, file_spec.name)
        version = int(champion.version)
        url = self.mlflow_hook.model_version_url(file_spec.name, version)
        context["ti"].xcom_push(key=MlflowModelVersionLink.url_key, value=url)
        contract = load_contract(self.mlflow, champion.run_id, file_spec)
        spec = contract.apply(file_spec)  # the champion scores with its own features, not today's spec
        uri = sources.day_uri(spec, self.paths, "features", day)
        if self.storage.exists(uri):
            contract.check_columns(spec.name, version, uri, self.storage.read_schema(uri).names)
        total, shards = scoring.inspect_input(self.storage, spec, uri)
        with self.warehouse() as conn:
            tables = warehouse.ensure_tables(conn, spec)
            warehouse.claim(
                conn, tables, day, context["run_id"], spec.scoring.lease_timeout_minutes, self._alive(context)
            )
        self.log.info(
            "scoring %s for %s with @champion = version %s; %d input rows in %d shard(s): %s",
            spec.name,
            day,
            version,
            total,
            len(shards),
            uri,
        )
        facts = scoring.ScoringRun(
            score_date=day,
            input_uri=uri,
            input_rows=total,
            model_name=spec.name,
            model_version=version,
            model_uri=f"models:/{spec.name}/{version}",
            mlflow_run_id=champion.run_id or "",
            dag_run_id=context["run_id"],
        )
        self.read_file(uri)
        self.read_model_version(spec.name, version)
        # The shard list is the return value because Airflow maps only over it; the run's facts
        # go to XCom key "run".
        context["ti"].xcom_push(key="run", value=facts.as_dict())
        return [s.as_dict() for s in shards]

    def _alive(self, context: Context) -> Any:
        """Whether the DAG run holding a claim may still write (the lease's takeover rule asks)."""
        ti, dag_id = context["ti"], context["dag"].dag_id

        def holder_alive(holder: str) -> bool:
            try:
                state = ti.get_dagrun_state(dag_id=dag_id, run_id=holder)
            except Exception as exc:  # the holder is not a run of this DAG (any more): nothing can renew it
                self.log.warning("holder %s of the claim is not a run of %s (%s)", holder, dag_id, exc)
                return False
            return str(state) in LIVE_RUN_STATES

        return holder_alive


class _ScoringStep(NightshiftOperator):
    """A task after ``resolve_run``: it works under the run's facts, its claim on the date, and the pinned
    version's contract.

    Args:
        resolved: XCom ``run`` of ``ResolveScoringRunOperator`` (templated).
    """

    def __init__(self, *, resolved: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved

    @cached_property
    def facts(self) -> ScoringRun:
        from include.nightshift.scoring import ScoringRun

        return ScoringRun.from_dict(self.resolved)

    def effective_spec(self) -> ModelSpec:
        return self.version_spec

    @cached_property
    def version_spec(self) -> ModelSpec:
        return self.contract_spec(self.facts.mlflow_run_id)

    @cached_property
    def tables(self) -> Tables:
        from include.nightshift.warehouse import Tables

        return Tables.for_spec(self.version_spec)

    @contextmanager
    def stops_if_given_back(self) -> Iterator[None]:
        """End as skipped when a task beside this one gave the run's date back (its check failed).

        The shards run beside the input suite and the key build beside the output suite; when one of
        those fails it gives the date back and drops the staging tables, and the task it ran beside
        stops at its next sign of life (or on the missing table) without a failure of its own: the
        failed check is what on-call needs to read.
        """
        from airflow.sdk.exceptions import AirflowSkipException
        from psycopg2 import errors

        from include.nightshift import warehouse

        try:
            yield
        except warehouse.DateGivenBackError as exc:
            raise AirflowSkipException(str(exc)) from None
        except errors.UndefinedTable:
            with self.warehouse() as conn:
                facts = self.facts
                if warehouse.given_back(conn, self.tables, facts.score_date):
                    message = warehouse.given_back_message(self.tables, facts.score_date, facts.dag_run_id)
                    raise AirflowSkipException(message) from None
            raise


class ScoreShardOperator(_ScoringStep):
    """Score one shard of the day into its staging tables (mapped: one task instance per shard).

    Args:
        shard: One shard, as returned by ``ResolveScoringRunOperator`` (templated; mapped).
    """

    template_fields = ("model", "resolved", "shard")
    ui_color = "#d9f2e6"

    def __init__(self, *, shard: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        import mlflow

        from include.nightshift import scoring
        from include.nightshift.evaluation import load_model

        mlflow.set_tracking_uri(self.mlflow.tracking_uri)
        mlflow.set_registry_uri(self.mlflow.tracking_uri)
        # Pinned by version at the start of the run: a promotion meanwhile does not change this run.
        model = load_model(self.facts.model_uri)
        self.read_file(self.facts.input_uri)
        self.read_model_version(self.facts.model_name, self.facts.model_version)
        shard = scoring.Shard.from_dict(self.shard)
        job = scoring.ShardJob(
            spec=spec,
            tables=self.tables,
            consts=self.facts.constants(),
            storage=self.storage,
            uri=self.facts.input_uri,
            shard=shard,
            model=model,
            threads=scoring.model_threads(spec, shard.of),
        )
        with self.stops_if_given_back():
            with self.warehouse() as scores, self.warehouse() as quarantine, self.warehouse() as leases:
                lease = self.facts.lease(leases, self.tables)
                result = scoring.score_shard(scores, quarantine, job, heartbeat=lease.heartbeat)
        return result.as_dict()


class AssembleScoresOperator(_ScoringStep):
    """Check the counts and the quarantine threshold, and build the day's table from the shards.

    Above ``scoring.max_quarantine_fraction`` the run fails: the quarantined rows are kept in
    ``<schema>.<model>_quarantine`` under this DAG run, and no scores are published.

    Args:
        shards: The outputs of the mapped ``ScoreShardOperator`` (templated).
    """

    template_fields = ("model", "resolved", "shards")

    def __init__(self, *, shards: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shards = shards

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import scoring

        # A slice reads every mapped result in one request (iterating asks for one index past the end).
        results = [scoring.ShardResult.from_dict(r) for r in self.shards[:]]
        facts = self.facts
        with self.stops_if_given_back(), self.warehouse() as conn:
            lease = facts.lease(conn, self.tables)
            day = scoring.assemble_day(conn, lease, spec, facts.constants(), facts.input_rows, results)
        self.log.info(
            "%s %s: %d rows scored, %d quarantined (%s) in %d shard(s)",
            spec.name,
            facts.score_date,
            day.scored_rows,
            day.quarantined_rows,
            day.quarantined_by_rule or "none",
            day.shards,
        )
        return day.as_dict()


class PublishScoresOperator(_ScoringStep):
    """Swap the validated day into ``<schema>.<model>_scores`` atomically and emit the Asset event.

    Args:
        scored: The output of ``AssembleScoresOperator`` (templated).
    """

    template_fields = ("model", "resolved", "scored")

    def __init__(self, *, scored: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scored = scored

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import warehouse

        facts = self.facts
        with self.warehouse() as conn:
            lease = facts.lease(conn, self.tables)
            out = warehouse.publish(
                conn, lease, facts.constants(), self.scored["staged_table"], int(self.scored["shards"])
            )
        summary = {
            **asdict(out),
            "score_date": facts.score_date.isoformat(),
            "rows": self.scored["scored_rows"],
            "quarantined_rows": self.scored["quarantined_rows"],
            "model_version": facts.model_version,
            "dag_run_id": facts.dag_run_id,
        }
        self.read_file(facts.input_uri)
        self.read_model_version(facts.model_name, facts.model_version)
        self.lineage.wrote(self.table(self.tables.schema, self.tables.scores))
        for asset in self.outlets:
            context["outlet_events"][asset].extra = summary
        self.log.info(
            "published %(rows)d rows of %(score_date)s into %(partition)s (model version %(model_version)s)", summary
        )
        return summary
