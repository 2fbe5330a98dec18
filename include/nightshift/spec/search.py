"""``training.search``: a hyperparameter search whose trials run as mapped Airflow tasks.

Each hyperparameter of the chosen estimator gets either a list of ``choices`` or a range
(``low``/``high``, ``type: int|float``, ``log: true`` for a log scale). ``n_trials`` parameter sets are
drawn with ``seed``; each is fitted on the training part minus its last ``validation_days`` days and
scored on those days by ``metric`` (default: the model type's headline metric, the one the gate
summary reports). The holdout the gate uses is never seen by the search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from include.nightshift.spec.metrics import Metric
from include.nightshift.spec.names import Frozen

if TYPE_CHECKING:
    from include.nightshift.spec.estimators import Estimator

MAX_TRIALS = 200


class Choices(Frozen):
    """A hyperparameter drawn from a list of values."""

    choices: tuple[Any, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _plain_values(self) -> Choices:
        for value in self.choices:
            if not (value is None or isinstance(value, str | int | float | bool)):
                raise ValueError(
                    f"choices must be plain values (text, numbers, true/false, null); got {value!r} "
                    f"({type(value).__name__})"
                )
        return self


class Range(Frozen):
    """A hyperparameter drawn uniformly from ``[low, high]`` (log-uniformly with ``log: true``)."""

    low: float
    high: float
    type: Literal["int", "float"] = "float"
    log: bool = False

    @model_validator(mode="after")
    def _bounds_ok(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got low {self.low})")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"type int needs whole-number bounds (got low {self.low}, high {self.high})")
        return self


def _kind(value: Any) -> str:
    return "choices" if isinstance(value, dict) and "choices" in value else "range"


Dimension = Annotated[Annotated[Choices, Tag("choices")] | Annotated[Range, Tag("range")], Discriminator(_kind)]


class Search(Frozen):
    """``training.search``: how many trials, drawn how, validated on which days, judged by which metric."""

    n_trials: int = Field(default=10, ge=1, le=MAX_TRIALS)
    seed: int = 0
    validation_days: int = Field(default=3, ge=1)
    metric: Metric | None = None
    space: dict[str, Dimension] = Field(min_length=1)

    def metric_for(self, headline: str) -> str:
        """The metric trials are compared by: the spec's, else the model type's headline metric."""
        return self.metric or headline

    def describe(self) -> dict[str, Any]:
        """The space as plain data (for MLflow and the DAG docs)."""
        return self.model_dump(mode="json")


def check_search(search: Search, estimator: Estimator, window_days: int, holdout_days: int) -> None:
    """The search fits the estimator and the window: its keys are the estimator's parameters, and the
    validation days leave days to fit on inside the training part.

    Raises:
        ValueError: naming the key, the rule and the observed value.
    """
    from include.nightshift.spec.estimators import check_parameter_names

    try:
        check_parameter_names(estimator, search.space)
    except ValueError as exc:
        raise ValueError(f"training.search.space: {exc}") from None
    training_days = window_days - holdout_days
    if search.validation_days >= training_days:
        raise ValueError(
            f"training.search.validation_days ({search.validation_days}) must be smaller than the training part "
            f"of the window (window_days {window_days} - holdout_days {holdout_days} = {training_days} days)"
        )
