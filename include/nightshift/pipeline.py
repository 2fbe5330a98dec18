"""The scikit-learn pipeline of a model: derive, impute, scale and one-hot encode, then the estimator;
and what a fitted pipeline outputs for each problem type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from include.nightshift.spec import ModelSpec

# Defaults Nightshift gives the built-in estimators (the spec's hyperparameters override them).
BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "sklearn.linear_model.LogisticRegression": {"class_weight": "balanced"},
    "sklearn.ensemble.RandomForestClassifier": {"class_weight": "balanced", "n_jobs": 1},
    "sklearn.ensemble.RandomForestRegressor": {"n_jobs": 1},
}


def build_estimator(spec: ModelSpec, algorithm: str, params: dict[str, Any] | None = None) -> Any:
    """An unfitted estimator of ``algorithm``, with the spec's hyperparameters (or ``params``) and seed.

    Raises:
        ValueError: ``algorithm`` is not a built-in name for the spec's type nor an estimator class.
    """
    try:
        est = spec.estimator(algorithm)
    except ValueError as exc:
        raise ValueError(f"algorithm {algorithm!r} is not one of {spec.training_algorithms()}: {exc}") from None
    kwargs = {**BUILTIN_DEFAULTS.get(est.path, {}), **(spec.hyperparameters(algorithm) if params is None else params)}
    if "random_state" in est.parameters:
        kwargs.setdefault("random_state", spec.training.random_seed)
    return est.load()(**kwargs)


def build_pipeline(spec: ModelSpec, algorithm: str, params: dict[str, Any] | None = None) -> Pipeline:
    """An unfitted pipeline: derived features, impute, scale and one-hot encode, then the estimator.

    Args:
        spec: The model (feature types, derived features, hyperparameters, seed).
        algorithm: A built-in name for the spec's target type, or a dotted import path.
        params: Hyperparameters to use instead of the spec's (a tuning trial's).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from include.nightshift.features import DeriveFeatures

    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer(
        [("num", numeric, spec.numeric_features), ("cat", categorical, spec.categorical_features)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    steps: list[tuple[str, Any]] = [("derive", DeriveFeatures.for_spec(spec))] if spec.derived else []
    final = "regressor" if spec.target.type == "regression" else "classifier"
    return Pipeline([*steps, ("preprocess", pre), (final, build_estimator(spec, algorithm, params))])


def predict_outputs(spec: ModelSpec, model: Any, x: pd.DataFrame) -> np.ndarray:
    """What the model says for the rows of ``x`` (its model input), by the spec's target type.

    binary: the positive-class probability; multiclass: class probabilities, one column per
    ``target.classes`` in that order (0 for a class the model never saw); regression: the prediction.
    """
    import numpy as np

    if spec.target.type == "regression":
        return np.asarray(model.predict(x), dtype=float)
    proba = np.asarray(model.predict_proba(x), dtype=float)
    if spec.target.type == "binary":
        return proba[:, 1]
    known = [str(c) for c in model.classes_]
    out = np.zeros((len(x), len(spec.target.classes or ())))
    for j, label in enumerate(spec.target.classes or ()):
        if label in known:
            out[:, j] = proba[:, known.index(label)]
    return out
