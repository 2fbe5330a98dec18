"""Airflow's Celery configuration with Nightshift's task libraries imported by each Celery worker.

``[celery] celery_config_options = nightshift_airflow.celery_config.CELERY_CONFIG``. Celery imports
the modules of its ``imports`` option in the worker's main process before it forks the pool, so every
task process starts with them (see ``nightshift_airflow.preload``). The scheduler builds its Celery
app from the same dict but never imports ``imports``; everything else is Airflow's default.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": ("nightshift_airflow.preload",)}
