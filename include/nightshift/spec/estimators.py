"""Which estimator a spec trains: a built-in short name for its target type, or any scikit-learn
compatible class by its dotted import path, with its hyperparameters checked when the spec loads.

The built-in estimators' parameter names are listed here, so that loading a spec (which the DAG
processor does on every parse) does not import scikit-learn; ``tests/unit/test_spec.py`` checks the
lists against the installed scikit-learn. A dotted path is imported when the spec loads: that is the
only way to know its parameters and its kind.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

_CLASSIFIERS = {
    "logistic_regression": "sklearn.linear_model.LogisticRegression",
    "random_forest": "sklearn.ensemble.RandomForestClassifier",
    "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingClassifier",
}
BUILTIN: dict[str, dict[str, str]] = {
    "binary": _CLASSIFIERS,
    "multiclass": _CLASSIFIERS,
    "regression": {
        "linear": "sklearn.linear_model.LinearRegression",
        "ridge": "sklearn.linear_model.Ridge",
        "random_forest": "sklearn.ensemble.RandomForestRegressor",
        "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingRegressor",
    },
}
DEFAULT_ALGORITHM = "hist_gradient_boosting"

_FOREST = (
    "bootstrap ccp_alpha criterion max_depth max_features max_leaf_nodes max_samples min_impurity_decrease "
    "min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst n_estimators n_jobs oob_score "
    "random_state verbose warm_start"
)
_HGB = (
    "categorical_features early_stopping interaction_cst l2_regularization learning_rate loss max_bins max_depth "
    "max_features max_iter max_leaf_nodes min_samples_leaf monotonic_cst n_iter_no_change random_state scoring tol "
    "validation_fraction verbose warm_start"
)
# get_params() of each built-in class, scikit-learn 1.9.1 (checked by a test against the installed one).
PARAMETERS: dict[str, frozenset[str]] = {
    "sklearn.linear_model.LogisticRegression": frozenset(
        "C class_weight dual fit_intercept intercept_scaling l1_ratio max_iter n_jobs penalty random_state solver "
        "tol verbose warm_start".split()
    ),
    "sklearn.ensemble.RandomForestClassifier": frozenset(f"{_FOREST} class_weight".split()),
    "sklearn.ensemble.HistGradientBoostingClassifier": frozenset(f"{_HGB} class_weight".split()),
    "sklearn.linear_model.LinearRegression": frozenset("copy_X fit_intercept n_jobs positive tol".split()),
    "sklearn.linear_model.Ridge": frozenset(
        "alpha copy_X fit_intercept max_iter positive random_state solver tol".split()
    ),
    "sklearn.ensemble.RandomForestRegressor": frozenset(_FOREST.split()),
    "sklearn.ensemble.HistGradientBoostingRegressor": frozenset(f"{_HGB} quantile".split()),
}
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class Estimator:
    """A resolved ``training.algorithm``: the class's import path and its parameter names."""

    name: str  # as the spec writes it
    path: str  # module.Class
    parameters: frozenset[str]
    builtin: bool

    def load(self) -> Any:
        """The estimator class (imports its module)."""
        module, _, cls = self.path.rpartition(".")
        return getattr(importlib.import_module(module), cls)


def builtin_names(target_type: str) -> tuple[str, ...]:
    return tuple(BUILTIN[target_type])


def resolve(target_type: str, algorithm: str) -> Estimator:
    """The estimator ``algorithm`` names for a model of ``target_type``.

    Raises:
        ValueError: neither a built-in name nor an importable estimator class of the right kind; the
            message lists the built-in names.
    """
    builtin = BUILTIN[target_type]
    if algorithm in builtin:
        path = builtin[algorithm]
        return Estimator(algorithm, path, PARAMETERS[path], builtin=True)
    quoted = [repr(n) for n in builtin]
    names = ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
    allowed = f"a built-in estimator for target.type {target_type} ({names}) or the dotted import path of a class"
    if not _DOTTED.match(algorithm):
        raise ValueError(f"{algorithm!r} is not {allowed}")
    return _imported(target_type, algorithm, allowed)


def _imported(target_type: str, path: str, allowed: str) -> Estimator:
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{path!r} cannot be imported ({type(exc).__name__}: {exc}); expected {allowed}") from None
    if not (isinstance(cls, type) and hasattr(cls, "get_params") and hasattr(cls, "fit")):
        raise ValueError(f"{path!r} is not a scikit-learn compatible estimator class (no fit/get_params)")
    from sklearn.base import is_classifier, is_regressor

    instance = cls()
    kind_ok = is_regressor(instance) if target_type == "regression" else is_classifier(instance)
    if not kind_ok:
        wanted = "a regressor" if target_type == "regression" else "a classifier"
        raise ValueError(f"{path!r} is not {wanted}, which target.type {target_type} needs")
    return Estimator(path, path, frozenset(instance.get_params(deep=False)), builtin=False)


def check_parameter_names(estimator: Estimator, names: Iterable[str]) -> None:
    """Every name is a parameter of the estimator.

    Raises:
        ValueError: naming the unknown parameters and listing the estimator's own.
    """
    unknown = sorted(set(names) - estimator.parameters)
    if unknown:
        verb = "is not a parameter" if len(unknown) == 1 else "are not parameters"
        raise ValueError(
            f"{', '.join(repr(u) for u in unknown)} {verb} of {estimator.path}; "
            f"its parameters: {', '.join(sorted(estimator.parameters))}"
        )


def check_hyperparameters(estimator: Estimator, params: dict[str, Any], target_type: str) -> None:
    """Every name in ``params`` is a parameter of the estimator (and a classifier can give probabilities).

    Raises:
        ValueError: naming the unknown parameters and listing the estimator's own.
    """
    check_parameter_names(estimator, params)
    if target_type != "regression" and not estimator.builtin:
        instance = estimator.load()(**params)
        if not hasattr(instance, "predict_proba"):
            raise ValueError(
                f"{estimator.path} with these parameters cannot give class probabilities (no predict_proba), "
                "which scores and the gate need (e.g. SVC needs probability: true)"
            )
