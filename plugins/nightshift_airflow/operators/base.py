"""What every Nightshift operator shares: the model spec, and mapping library errors to Airflow."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import Context

    from include.nightshift.spec import ModelSpec


@contextmanager
def final_on_bad_input() -> Iterator[None]:
    """Bad data and bad config fail the task at once (no retry); anything else may be retried."""
    from include.nightshift.errors import FINAL_ERRORS

    try:
        yield
    except FINAL_ERRORS as exc:
        raise AirflowFailException(str(exc)) from exc


def run_slug(run_id: str) -> str:
    """A DAG run id made safe for a path segment."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def run_date(context: Context) -> Any:
    """The date a run is for: its logical date, or when it was triggered if it has none."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.date()


class NightshiftOperator(BaseOperator):
    """Base class: holds the model name; subclasses implement ``run``.

    Args:
        model: The spec name under ``include/models/`` (templated).
    """

    template_fields: tuple[str, ...] = ("model",)
    ui_color = "#e8e4f8"

    def __init__(self, *, model: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model

    def load_spec(self) -> ModelSpec:
        from include.nightshift.spec import load_model

        return load_model(self.model)

    def execute(self, context: Context) -> Any:
        with final_on_bad_input():
            return self.run(context, self.load_spec())

    def run(self, context: Context, spec: ModelSpec) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError
