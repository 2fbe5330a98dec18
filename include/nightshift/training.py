"""The scikit-learn pipeline (preprocessing inside it) and the metrics the gate compares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from include.nightshift.spec import ModelSpec


def build_pipeline(spec: ModelSpec, algorithm: str) -> Pipeline:
    """An unfitted pipeline: impute, scale and one-hot encode, then the classifier.

    Args:
        spec: The model (feature types, hyperparameters, seed).
        algorithm: One of ``spec.ALGORITHMS``.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    params: dict[str, Any] = spec.hyperparameters(algorithm)
    seed = spec.training.random_seed
    classifiers = {
        "logistic_regression": lambda: LogisticRegression(class_weight="balanced", random_state=seed, **params),
        "random_forest": lambda: RandomForestClassifier(class_weight="balanced", random_state=seed, n_jobs=1, **params),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(random_state=seed, **params),
    }
    if algorithm not in classifiers:
        raise ValueError(f"algorithm {algorithm!r} is not one of {sorted(classifiers)}")
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
    return Pipeline([("preprocess", pre), ("classifier", classifiers[algorithm]())])


def model_input(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The feature columns in spec order, with dtypes the model signature expects.

    Integers become float64 so that a missing value in tomorrow's data does not break the schema;
    categories are plain strings (object) with None for missing.
    """
    out = df[spec.feature_names].copy()
    for f in spec.features:
        if f.type in ("int", "float"):
            out[f.name] = out[f.name].astype("float64")
        else:
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
    return out


def evaluate(y_true: Any, scores: Any, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score, and precision / recall / F1 at ``threshold``."""
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y_true).astype(int)
    s = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    pred = (s >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "log_loss": float(log_loss(y, s, labels=[0, 1])),
        "brier": float(brier_score_loss(y, s)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }
