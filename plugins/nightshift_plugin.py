"""Entry point Airflow's plugin manager finds in the plugins folder."""

from nightshift_airflow.plugin import NightshiftPlugin

__all__ = ["NightshiftPlugin"]
