"""The Nightshift Airflow plugin: our operator extra links, and the Nightshift page in the UI."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from nightshift_airflow.links import (
    URL_PREFIX,
    DriftReportLink,
    GXValidationResultLink,
    MlflowModelVersionLink,
    MlflowRunLink,
)
from nightshift_airflow.ui import app as nightshift_app


class NightshiftPlugin(AirflowPlugin):
    name = "nightshift"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DriftReportLink(), GXValidationResultLink()]
    # The page is served by the API server (fastapi_apps) and shown inside the UI (external_views:
    # a relative href and a url_route embed it in the UI's frame, under Browse).
    fastapi_apps = [
        {"app": nightshift_app, "url_prefix": URL_PREFIX, "name": "Nightshift"},
    ]
    external_views = [
        {
            "name": "Nightshift",
            "href": "nightshift/",
            "url_route": "nightshift",
            "destination": "nav",
            "category": "browse",
        },
    ]
