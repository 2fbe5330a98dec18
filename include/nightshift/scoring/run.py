"""The facts of a scoring run, fixed by its first task and shared with the others through XCom."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date  # noqa: TC003 - records.from_json resolves the field types at run time
from typing import TYPE_CHECKING

from include.nightshift.records import JsonRecord
from include.nightshift.warehouse import Constants, Lease

if TYPE_CHECKING:
    from psycopg2.extensions import connection

    from include.nightshift.warehouse import Tables


@dataclass(frozen=True)
class ScoringRun(JsonRecord):
    """The day, its input and the model version pinned for the whole run."""

    score_date: date
    input_uri: str
    input_rows: int
    model_name: str
    model_version: int
    model_uri: str
    mlflow_run_id: str
    dag_run_id: str

    def constants(self) -> Constants:
        """The values every row of the day shares."""
        return Constants(self.score_date, self.model_name, self.model_version, self.mlflow_run_id, self.dag_run_id)

    def lease(self, conn: connection, tables: Tables) -> Lease:
        """The run's claim on its date, taken up again in this task (fails if another run took it over)."""
        return Lease.resume(conn, tables, self.score_date, self.dag_run_id)
