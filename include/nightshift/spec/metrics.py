"""The metrics the gate and monitoring accept, by problem type, and which direction is better."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, ValidationInfo

TargetType = Literal["binary", "multiclass", "regression"]
TARGET_TYPES: tuple[str, ...] = get_args(TargetType)

# metric -> True when higher is better, per target.type
METRICS: dict[str, dict[str, bool]] = {
    "binary": {
        "roc_auc": True,
        "pr_auc": True,
        "precision": True,
        "recall": True,
        "f1": True,
        "log_loss": False,
        "brier": False,
    },
    "multiclass": {"accuracy": True, "f1_macro": True, "log_loss": False},
    "regression": {"mae": False, "rmse": False, "r2": True, "mape": False},
}
HIGHER_IS_BETTER: dict[str, bool] = {m: up for metrics in METRICS.values() for m, up in metrics.items()}
# The one metric a summary line shows for a model of the type.
HEADLINE: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}


def target_type_of(info: ValidationInfo) -> str | None:
    """The target type the spec being validated declares (passed by the loader as context)."""
    context = info.context or {}
    kind = context.get("target_type")
    return kind if kind in TARGET_TYPES else None


def _fits_type(name: str, info: ValidationInfo) -> str:
    kind = target_type_of(info)
    allowed = METRICS.get(kind or "", HIGHER_IS_BETTER)
    if name not in allowed:
        quoted = [repr(m) for m in allowed]
        listed = ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
        fit = f" for target.type {kind}" if kind else ""
        raise ValueError(f"metric {name!r} does not exist{fit}; allowed: {listed}")
    return name


# A metric name, checked against the spec's target.type when the spec is loaded.
Metric = Annotated[str, AfterValidator(_fits_type)]


def non_negative_metrics(v: dict[str, float], key: str) -> dict[str, float]:
    """``v`` if every allowed change in it is >= 0, else ``ValueError`` naming ``key.<metric>``."""
    for metric, allowed in v.items():
        if allowed < 0:
            raise ValueError(f"{key}.{metric} is {allowed}; it must be >= 0")
    return v


def is_worse(metric: str, value: float, bound: float) -> bool:
    """Whether ``value`` is on the wrong side of ``bound`` for ``metric``."""
    return value < bound if HIGHER_IS_BETTER[metric] else value > bound
