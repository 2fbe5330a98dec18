"""Import, once per worker, the libraries every Nightshift task would otherwise import on its own.

A task process is forked from its executor's worker: a ``LocalExecutor`` worker (started by the
scheduler's ``multiprocessing`` forkserver) or a Celery pool process (forked from the Celery worker).
Whatever the worker has imported, the task has too, copy-on-write. Left to themselves, the tasks
import MLflow (about 2 s on this project's 2-core machine), Evidently (about 5 s), Great Expectations
and scikit-learn anew in every process; ``bench/nightly.py`` measured a 1M-row day going from 41 s to
23 s from trigger to the end of monitoring once they come preloaded (``docs/benchmarks.md``).

How it is wired (``PRELOAD_ENV`` in ``scripts/stack/settings.py``):

- ``LocalExecutor``: ``[scheduler] mp_start_method = forkserver`` and
  ``[scheduler] mp_forkserver_preload = airflow,nightshift_airflow.preload``: Airflow's own settings
  (``airflow`` first, which puts the plugins folder on ``sys.path``); the forkserver imports this
  module once, and every worker it starts inherits it.
- ``CeleryExecutor`` (available, not on by default yet: see ``PRELOAD_ENV``): ``[celery]
  celery_config_options = nightshift_airflow.celery_config.CELERY_CONFIG``: Airflow's Celery settings
  plus Celery's ``imports`` option, which the Celery worker imports before it forks its pool.

Only third-party libraries and Airflow's own modules are listed, never Nightshift's code
(``include.nightshift``, the operators, the factory): a worker keeps what it imported until it is
restarted, and a changed model spec or operator must take effect at the next task, not the next
restart. A library that fails to import is logged and skipped; the task then imports it itself
(and fails there, where the error belongs to a task and reaches its alert).
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# What the tasks import that the worker has not, found with PYTHONPROFILEIMPORTTIME=1 in the task logs
# of a bench run (each line: a module and the seconds it cost a task on the 2-core machine).
TASK_LIBRARIES = (
    # the task runner's own imports after the fork (about 0.8 s in every task)
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.executors.local_executor",  # the LocalExecutor worker's own module (unpickled in it)
    "airflow.dag_processing.dagbag",
    "airflow.serialization.serialized_objects",
    "airflow.providers.openlineage.plugins.listener",  # 0.35-0.5 s
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.amazon.aws.hooks.s3",
    # data and models
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "psycopg2",
    "scipy.stats",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "skops.io",  # model files (1.7 s in a scoring shard)
    "mlflow",  # about 2 s
    "mlflow.sklearn",
    "great_expectations",  # the validate_* tasks
    "evidently",  # about 5 s: the monitoring drift task
    "evidently.presets",
)


def preload(names: tuple[str, ...] = TASK_LIBRARIES) -> list[str]:
    """Import ``names``; return those that failed (each logged with its error)."""
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # one broken library must not keep the others out of the worker
            log.warning(
                "Nightshift preload: could not import %s (%s: %s); tasks will import it themselves",
                name,
                type(e).__name__,
                e,
            )
            failed.append(name)
    return failed


preload()
