"""Operators of the training DAG. Each calls one library function and pushes small results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import MlflowModelVersionLink, MlflowRunLink
from nightshift_airflow.operators.base import DataOperator, NightshiftOperator, run_date, run_slug

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.datasets import TrainingSet
    from include.nightshift.spec import ModelSpec


class ResolveTrainingRunOperator(NightshiftOperator):
    """Check the trigger form's params and fix the run's data window.

    Reads ``params``: ``window_end`` (date or empty), ``algorithm``, ``force_promote``, ``force_reason``.
    Returns the window and the checked params for the downstream tasks.
    """

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.datasets import resolve_window
        from include.nightshift.errors import ParamsError

        params = context["params"]
        algorithm = params.get("algorithm") or spec.training.algorithm
        allowed = spec.training_algorithms()
        if algorithm not in allowed:
            raise ParamsError(f"param 'algorithm' is {algorithm!r}; allowed: {', '.join(allowed)}")
        force = bool(params.get("force_promote"))
        reason = (params.get("force_reason") or "").strip()
        if force and not reason:
            raise ParamsError(
                "param 'force_promote' is true but 'force_reason' is empty: "
                "say why the gate may be overridden (it is recorded on the model version)"
            )
        window = resolve_window(spec, run_date(context), params.get("window_end") or None)
        self.log.info(
            "training window %s..%s, holdout from %s, algorithm %s",
            window.start,
            window.end,
            window.holdout_start,
            algorithm,
        )
        return {"window": window.as_dict(), "algorithm": algorithm, "force_promote": force, "force_reason": reason}


class BuildTrainingSetOperator(DataOperator, NightshiftOperator):
    """Join the window's features with their labels, split by time, write both splits as Parquet.

    Args:
        resolved: The output of ``ResolveTrainingRunOperator`` (templated).
        landing_root: Root URI of the landing partitions (templated).
        work_root: Root URI for this run's intermediate files (templated).
    """

    template_fields = ("model", "resolved", "landing_root", "work_root")

    def __init__(self, *, resolved: Any, landing_root: str, work_root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved
        self.landing_root = landing_root
        self.work_root = work_root

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift import datasets
        from include.nightshift.lineage import file_dataset
        from include.nightshift.storage import join_uri

        window = datasets.Window.from_dict(self.resolved["window"])
        ts = datasets.load_training_set(self.storage, spec, self.paths, window)
        for kind in ("features", "labels"):
            for uri in datasets.partition_uris(spec, self.paths, window.days, kind).values():
                self.read_file(uri)
        base = join_uri(self.paths.work_root, spec.name, "training", run_slug(context["run_id"]))
        out = {
            "train_uri": self.storage.write_parquet(ts.train, join_uri(base, "train.parquet")),
            "holdout_uri": self.storage.write_parquet(ts.holdout, join_uri(base, "holdout.parquet")),
            "content_hash": ts.content_hash,
            "train_rows": len(ts.train),
            "holdout_rows": len(ts.holdout),
            "unlabelled_rows": ts.unlabelled_rows,
        }
        for key in ("train_uri", "holdout_uri"):
            self.lineage.wrote(file_dataset(str(out[key])))
        self.log.info(
            "training set: %(train_rows)d train rows, %(holdout_rows)d holdout rows, hash %(content_hash)s", out
        )
        return out


class _UsesTrainingSet(NightshiftOperator):
    """An operator that reads the training set written by ``BuildTrainingSetOperator``.

    Args:
        training_set: The output of ``BuildTrainingSetOperator`` (templated).
    """

    def __init__(self, *, training_set: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training_set = training_set

    def read_training_set(self) -> TrainingSet:
        from include.nightshift.datasets import TrainingSet

        return TrainingSet(
            train=self.storage.read_parquet(self.training_set["train_uri"]),
            holdout=self.storage.read_parquet(self.training_set["holdout_uri"]),
            content_hash=self.training_set["content_hash"],
            unlabelled_rows=self.training_set["unlabelled_rows"],
        )


class TrainModelOperator(_UsesTrainingSet):
    """Fit the pipeline in one MLflow run (params, metrics, model, data window and hash, GX results).

    Args:
        resolved: The output of ``ResolveTrainingRunOperator`` (templated).
        validations: GX result summaries to log with the run, by name (templated).
        search_plan: The output of ``PlanSearchOperator`` (its trials, each naming the training run to
            continue), when the spec has a search (templated).
        trials: The outputs of the mapped ``SearchTrialOperator`` (templated).
    """

    template_fields = ("model", "resolved", "training_set", "validations", "search_plan", "trials")
    operator_extra_links = (MlflowRunLink(),)

    def __init__(
        self, *, resolved: Any, validations: Any = None, search_plan: Any = None, trials: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved
        self.validations = validations or {}
        self.search_plan = search_plan
        self.trials = trials

    def _search(self, spec: ModelSpec) -> dict[str, Any] | None:
        """The finished search (space, trials, best), or None without one."""
        if self.search_plan is None or self.trials is None:
            return None
        from include.nightshift.search import TrialResult, summary

        # One slice request reads every mapped result; iterating would ask for one index past the end,
        # which the API server answers with an error response (and an error line in this task's log).
        results = [TrialResult.from_dict(r) for r in self.trials[:]]
        found = summary(spec, results)
        self.log.info(
            "best of %d trials: %d, %s %.4f with %s",
            len(results),
            found["best"]["index"],
            found["metric"],
            found["best"]["value"],
            found["best"]["params"],
        )
        return found

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.datasets import Window
        from include.nightshift.training import train_and_log

        tags = {
            "nightshift.airflow_dag_id": context["dag"].dag_id,
            "nightshift.airflow_run_id": context["run_id"],
            "nightshift.airflow_task_id": self.task_id,
        }
        result = train_and_log(
            self.mlflow,
            spec,
            self.read_training_set(),
            Window.from_dict(self.resolved["window"]),
            self.resolved["algorithm"],
            tags,
            artifacts=dict(self.validations),
            search=self._search(spec),
            run_id=self.search_plan[0]["run_id"] if self.search_plan else None,
        )
        url = self.mlflow_hook.run_url(result.experiment_id, result.run_id)
        context["ti"].xcom_push(key=MlflowRunLink.url_key, value=url)
        self.log.info("MLflow run: %s", url)
        return {
            "run_id": result.run_id,
            "model_uri": result.model_uri,
            "model_id": result.model_id,
            "experiment_id": result.experiment_id,
            "holdout": {k.removeprefix("holdout_"): v for k, v in result.metrics.items() if k.startswith("holdout_")},
        }


class EvaluateChallengerOperator(_UsesTrainingSet):
    """Score the same holdout with the challenger and the current ``@champion``.

    Args:
        trained: The output of ``TrainModelOperator`` (templated).
    """

    template_fields = ("model", "trained", "training_set")

    def __init__(self, *, trained: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained = trained

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from dataclasses import asdict

        from include.nightshift.evaluation import evaluate_against_champion

        holdout = self.storage.read_parquet(self.training_set["holdout_uri"])
        ev = evaluate_against_champion(self.mlflow, spec, self.trained["model_uri"], self.trained["run_id"], holdout)
        m = spec.headline_metric
        self.log.info(
            "holdout %s: challenger %.4f, champion %s",
            m,
            ev.challenger[m],
            f"{ev.champion[m]:.4f} (v{ev.champion_version})" if ev.champion else (ev.champion_note or "none"),
        )
        return asdict(ev)


class RegisterModelOperator(_UsesTrainingSet):
    """Register the challenger as a new model version with alias ``challenger``; returns the version.

    In ``promotion.mode: shadow`` the alias is left alone: it names the version in shadow, which a new
    version becomes only once it passes the gate (see ``PromoteChampionOperator``).

    Args:
        trained: The output of ``TrainModelOperator`` (templated).
    """

    template_fields = ("model", "trained", "training_set")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(self, *, trained: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained = trained

    def run(self, context: Context, spec: ModelSpec) -> int:
        from include.nightshift.lineage import model_version_dataset
        from include.nightshift.registry import register

        tags = {
            "nightshift.airflow_run_id": context["run_id"],
            "nightshift.data_hash": self.training_set["content_hash"],
        }
        t = self.trained
        gate_mode = spec.promotion.mode == "gate"
        mv = register(self.mlflow, spec, t["model_uri"], t["model_id"], t["run_id"], tags, set_challenger=gate_mode)
        for key in ("train_uri", "holdout_uri"):
            self.read_file(self.training_set[key])
        self.lineage.wrote(model_version_dataset(self.mlflow_hook.tracking_uri, spec.name, mv.version))
        url = self.mlflow_hook.model_version_url(spec.name, mv.version)
        context["ti"].xcom_push(key=MlflowModelVersionLink.url_key, value=url)
        self.log.info("registered %s version %s%s", spec.name, mv.version, " as @challenger" if gate_mode else "")
        return int(mv.version)


class GateOperator(NightshiftOperator):
    """Decide whether the challenger may become champion, and record why on MLflow.

    A rejection is a decision: this task succeeds and the promotion task is skipped.

    Args:
        resolved: The output of ``ResolveTrainingRunOperator`` (templated).
        trained: The output of ``TrainModelOperator`` (templated).
        evaluation: The output of ``EvaluateChallengerOperator`` (templated).
        version: The output of ``RegisterModelOperator`` (templated).
    """

    template_fields = ("model", "resolved", "trained", "evaluation", "version")

    def __init__(self, *, resolved: Any, trained: Any, evaluation: Any, version: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved
        self.trained = trained
        self.evaluation = evaluation
        self.version = version

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.evaluation import Evaluation
        from include.nightshift.gate import decide
        from include.nightshift.registry import record_decision

        ev = Evaluation(**self.evaluation)
        version = int(self.version)
        decision = decide(
            spec.gate,
            ev.challenger,
            ev.champion,
            force_promote=self.resolved["force_promote"],
            force_reason=self.resolved["force_reason"],
            champion_note=ev.champion_note,
        )
        extra = {"nightshift.airflow_run_id": context["run_id"], "nightshift.model_version": str(version)}
        if decision.forced:
            extra["nightshift.force_reason"] = decision.force_reason
        record_decision(self.mlflow, spec, version, self.trained["run_id"], decision, ev, extra)
        self.log.info("%s version %s: %s", spec.name, version, decision.summary())
        return {
            "passed": decision.passed,
            "verdict": decision.verdict,
            "summary": decision.summary(),
            "version": version,
            "champion_version": ev.champion_version,
        }
