"""The gate's evidence: the challenger and the champion scored on the same holdout.

The champion is scored as its own contract says (its input features and expressions), so a spec edit
since it was trained does not change how it is measured. When the holdout cannot show what the
champion needs (a column no longer landed, another target type or other classes), the champion is
not compared and the reason goes into the gate's record.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.registry import CHAMPION, TAG, get_alias

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd
    from mlflow import MlflowClient

    from include.nightshift.spec import ModelSpec


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics of the challenger and of the champion (None when there is none, or it is not comparable)."""

    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: int | None
    champion_note: str | None = None


@contextmanager
def quiet_skops_load() -> Iterator[None]:
    """Silence, while a model loads, the warnings skops trips in Airflow's deprecated-attribute shims.

    skops looks up the module of an object without ``__module__`` (a ufunc) by ``getattr`` on every
    module in ``sys.modules``; in a task process that includes Airflow's compatibility modules
    (``airflow.macros``, ``airflow.operators``, ...), each of which warns ``DeprecatedImportWarning`` (a
    ``FutureWarning``) per name asked: about 1,160 log lines for one ``score`` task. Only that warning,
    only when skops is the caller, only during the load; every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The `airflow\.", category=FutureWarning, module=r"skops\.")
        yield


def load_model(model_uri: str) -> Any:
    """A registered scikit-learn model (skops format), without skops' warning flood in the task log."""
    import mlflow

    with quiet_skops_load():
        return mlflow.sklearn.load_model(model_uri)


def _champion_metrics(
    client: MlflowClient, spec: ModelSpec, version: int, run_id: str | None, holdout: pd.DataFrame
) -> tuple[dict[str, float] | None, str | None]:
    from include.nightshift.contract import load_contract
    from include.nightshift.training import measure

    contract = load_contract(client, run_id, spec)
    if contract.target.type != spec.target.type or contract.target.classes != spec.target.classes:
        return None, (
            f"champion v{version} predicts a {contract.target.type} target {list(contract.target.classes or [])}, "
            f"this model a {spec.target.type} one {list(spec.target.classes or [])}"
        )
    missing = sorted(set(contract.input_names) - set(holdout.columns))
    if missing:
        return None, f"champion v{version} needs column(s) {', '.join(missing)}, which the holdout does not have"
    champion_spec = contract.apply(spec)
    truth = holdout[spec.target.name]
    return measure(champion_spec, load_model(f"models:/{spec.name}/{version}"), holdout, truth), None


def evaluate_against_champion(
    client: MlflowClient, spec: ModelSpec, model_uri: str, run_id: str, holdout: pd.DataFrame
) -> Evaluation:
    """Score the same holdout with the challenger and the current champion; log both to the run."""
    import mlflow

    from include.nightshift.training import measure

    mlflow.set_tracking_uri(client.tracking_uri)
    challenger = measure(spec, load_model(model_uri), holdout)
    champion_mv = get_alias(client, spec.name, CHAMPION)
    champion, note, version = None, None, None
    if champion_mv is not None:
        # Pinned to the version just read: the comparison and its record name the same model.
        version = int(champion_mv.version)
        champion, note = _champion_metrics(client, spec, version, champion_mv.run_id, holdout)
    for k, v in challenger.items():
        client.log_metric(run_id, f"gate_challenger_{k}", v)
    for k, v in (champion or {}).items():
        client.log_metric(run_id, f"gate_champion_{k}", v)
    if version is not None:
        client.set_tag(run_id, f"{TAG}.compared_with_version", str(version))
    return Evaluation(challenger, champion, version, note)
