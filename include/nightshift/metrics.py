"""The metrics the gate and monitoring compare, by problem type (the same functions for the holdout at
training time and for the realised performance of scored days)."""

from __future__ import annotations

from typing import Any


def evaluate(
    y_true: Any,
    outputs: Any,
    threshold: float = 0.5,
    target_type: str = "binary",
    classes: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """The metrics of ``target_type`` for ``outputs`` against the truth.

    Args:
        outputs: binary: the positive-class probability per row; multiclass: an (n, k) array of class
            probabilities with columns in ``classes`` order; regression: the predicted numbers.
        threshold: binary only: the score from which the predicted label is 1.
    """
    if target_type == "regression":
        return evaluate_regression(y_true, outputs)
    if target_type == "multiclass":
        return evaluate_multiclass(y_true, outputs, tuple(classes or ()))
    return evaluate_binary(y_true, outputs, threshold)


def evaluate_binary(y_true: Any, scores: Any, threshold: float) -> dict[str, float]:
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


def evaluate_multiclass(y_true: Any, proba: Any, classes: tuple[str, ...]) -> dict[str, float]:
    """Accuracy, macro F1 and log loss over ``classes`` (the predicted class is the most probable one)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    y = np.asarray(y_true).astype(str)
    p = np.clip(np.asarray(proba, dtype=float), 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    labels = list(classes)
    pred = np.asarray(labels, dtype=object)[p.argmax(axis=1)].astype(str)
    order = np.argsort(labels)  # log_loss reads the probability columns in sorted label order
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y, p[:, order], labels=sorted(labels))),
        "rows": float(len(y)),
    }


def evaluate_regression(y_true: Any, prediction: Any) -> dict[str, float]:
    """MAE, RMSE, R² and MAPE (a fraction: 0.12 is 12 %, over the rows whose truth is not 0)."""
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prediction, dtype=float)
    nonzero = y != 0
    mape = float(np.mean(np.abs((y[nonzero] - p[nonzero]) / y[nonzero]))) if nonzero.any() else float("nan")
    return {
        "mae": float(mean_absolute_error(y, p)),
        "rmse": float(np.sqrt(mean_squared_error(y, p))),
        "r2": float(r2_score(y, p)) if len(y) > 1 else float("nan"),
        "mape": mape,
        "mean_target": float(y.mean()) if len(y) else float("nan"),
        "rows": float(len(y)),
    }


def calibration_error(labels: Any, scores: Any, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted gap between mean score and positive rate per score decile."""
    import numpy as np

    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    which = np.minimum((s * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(s[mask].mean() - y[mask].mean())
    return float(total / len(y)) if len(y) else 0.0
