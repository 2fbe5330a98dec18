"""A training DAG with ``training.search`` end to end with ``dag.test()``: the trials run as mapped task
instances, each is an MLflow child run of the training run, and the promoted version carries the best
trial's parameters. Model of this module: ``tuned``, a copy of churn with a tiny search space."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import DATA_END
from tests.integration.helpers import run_dag, use_models_dir

pytestmark = pytest.mark.integration

SEARCH = {
    "n_trials": 3,
    "seed": 11,
    "validation_days": 4,
    "space": {
        "max_iter": {"choices": [10, 40]},
        "learning_rate": {"low": 0.02, "high": 0.3, "log": True},
        "max_leaf_nodes": {"low": 4, "high": 31, "type": "int"},
    },
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, landing):
    from include.nightshift.spec import DEFAULT_MODELS_DIR, load_model

    d = tmp_path_factory.mktemp("models")
    raw = yaml.safe_load((DEFAULT_MODELS_DIR / "churn.yaml").read_text())
    raw["name"] = "tuned"
    raw["training"]["search"] = SEARCH
    (d / "tuned.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    restore = use_models_dir(d)
    yield load_model("tuned")
    restore()


def test_search_runs_trials_as_mapped_tasks_and_promotes_the_best(tuned, mlflow_client):
    from include.nightshift.registry import get_alias
    from include.nightshift.search import sample_trials
    from nightshift_airflow.factory import training_dag

    result = run_dag(training_dag(tuned), DATA_END)

    assert result.state == "success", result
    assert result.tasks["plan_search"] == result.tasks["trial"] == result.tasks["promote"] == "success"
    assert result.map_indexes["trial"] == [0, 1, 2]

    champion = get_alias(mlflow_client, "tuned", "champion")
    parent = mlflow_client.get_run(champion.run_id)
    children = mlflow_client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    by_trial = {int(c.data.tags["nightshift.trial"]): c for c in children}
    planned = sample_trials(tuned.training.search)
    for i, child in by_trial.items():
        assert child.info.status == "FINISHED"
        assert child.data.params["max_iter"] == str(planned[i]["max_iter"])
        assert 0.0 <= child.data.metrics["validation_roc_auc"] <= 1.0
    best = max(by_trial, key=lambda i: (by_trial[i].data.metrics["validation_roc_auc"], -i))

    for name, value in planned[best].items():
        assert parent.data.params[f"hp_{name}"] == str(value)
    assert parent.data.params["hp_l2_regularization"] == "0.1"  # the spec's own, not searched, still applies
    assert parent.data.tags["nightshift.search_best_trial"] == str(best)
    assert parent.data.metrics["search_best_validation_roc_auc"] == pytest.approx(
        by_trial[best].data.metrics["validation_roc_auc"]
    )
    recorded = json.loads(_artifact_text(mlflow_client, parent.info.run_id, "search/search.json"))
    assert recorded["best"]["index"] == best
    assert [t["index"] for t in recorded["trials"]] == [0, 1, 2]
    assert set(recorded["space"]["space"]) == set(SEARCH["space"])

    from mlflow.sklearn import load_model

    fitted = load_model(f"models:/tuned/{champion.version}")
    assert fitted.named_steps["classifier"].max_iter == planned[best]["max_iter"]


def _artifact_text(client, run_id: str, path: str) -> str:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()
