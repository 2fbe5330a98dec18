"""The Nightshift Airflow plugin: registers our operator extra links with the UI."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from nightshift_airflow.links import (
    DriftReportLink,
    MlflowModelVersionLink,
    MlflowRunLink,
)


class NightshiftPlugin(AirflowPlugin):
    name = "nightshift"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DriftReportLink()]
