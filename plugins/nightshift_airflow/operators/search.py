"""Operators of a training DAG's hyperparameter search: plan the trials, then run one trial per mapped task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nightshift_airflow.links import MlflowRunLink
from nightshift_airflow.operators.base import NightshiftOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.spec import ModelSpec


class PlanSearchOperator(NightshiftOperator):
    """Draw the search's trial parameter sets and open the MLflow training run the trials are children of.

    Returns one ``{"index", "params", "run_id", "experiment_id", "algorithm"}`` per trial (what ``trial``
    is mapped over; ``run_id`` is the training run's).

    Args:
        resolved: The output of ``ResolveTrainingRunOperator`` (templated).
    """

    template_fields = ("model", "resolved")
    operator_extra_links = (MlflowRunLink(),)

    def __init__(self, *, resolved: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved

    def run(self, context: Context, spec: ModelSpec) -> list[dict[str, Any]]:
        from include.nightshift.errors import ParamsError
        from include.nightshift.search import sample_trials, start_training_run
        from include.nightshift.spec.estimators import check_parameter_names

        search = spec.training.search
        if search is None:
            raise ParamsError(f"model {spec.name} has no training.search; this DAG was generated from an older spec")
        algorithm = self.resolved["algorithm"]
        try:
            check_parameter_names(spec.estimator(algorithm), search.space)
        except ValueError as exc:
            raise ParamsError(
                f"param 'algorithm' is {algorithm!r} but training.search.space is for "
                f"{spec.training.algorithm!r}: {exc}"
            ) from None
        tags = {
            "nightshift.airflow_dag_id": context["dag"].dag_id,
            "nightshift.airflow_run_id": context["run_id"],
            "nightshift.airflow_task_id": "train",
        }
        experiment_id, run_id = start_training_run(self.mlflow, spec, tags)
        ids = {"run_id": run_id, "experiment_id": experiment_id, "algorithm": algorithm}
        trials = [{"index": i, "params": p, **ids} for i, p in enumerate(sample_trials(search))]
        url = self.mlflow_hook.run_url(experiment_id, run_id)
        context["ti"].xcom_push(key=MlflowRunLink.url_key, value=url)
        self.log.info(
            "%d trials of %s over %s, children of MLflow run %s",
            len(trials),
            algorithm,
            ", ".join(sorted(search.space)),
            url,
        )
        return trials


class SearchTrialOperator(NightshiftOperator):
    """Fit one trial's parameters on the training part minus the validation days, score those days, and
    record the trial as an MLflow child run of the training run. Mapped over ``trial``.

    Args:
        trial: One item of ``PlanSearchOperator``'s output (templated).
        training_set: The output of ``BuildTrainingSetOperator`` (templated).
    """

    template_fields = ("model", "trial", "training_set")

    def __init__(self, *, trial: Any, training_set: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trial = trial
        self.training_set = training_set

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from dataclasses import replace

        from include.nightshift.search import log_trial, run_trial

        train = self.storage.read_parquet(self.training_set["train_uri"])
        t = self.trial
        index, params = int(t["index"]), dict(t["params"])
        result = run_trial(spec, t["algorithm"], index, params, train)
        child = log_trial(self.mlflow, t["experiment_id"], t["run_id"], result)
        self.log.info("trial %d: MLflow run %s", index, self.mlflow_hook.run_url(t["experiment_id"], child))
        return replace(result, run_id=child).as_dict()
