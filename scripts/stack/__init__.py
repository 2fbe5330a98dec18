"""The embedded Nightshift platform: bring it up, run its main job, take it down.

    python -m scripts.stack up       # Postgres, MLflow server, Airflow (scheduler, API server, ...)
    python -m scripts.stack run      # up, sample data, trigger <model>_training over the REST API, wait
    python -m scripts.stack down     # stop what `up` started
    python -m scripts.stack logs     # where the logs are
    python -m scripts.stack status   # which services are running
    python -m scripts.stack env      # shell exports for the Airflow CLI against this stack

One module per job:

- :mod:`.settings`: the stack's settings (environment) and its secrets file;
- :mod:`.postgres`: finding or starting PostgreSQL, the databases, the analyst login;
- :mod:`.processes`: starting, watching and stopping background services;
- :mod:`.services`: the Airflow and MLflow environment and services (``up`` / ``down``);
- :mod:`.api`: a small client of Airflow's REST API;
- :mod:`.demo`: the main job ``make run`` runs, and the facts its summaries show;
- :mod:`.summary`: the summaries it prints (formatting only: nothing there starts or writes anything);
- :mod:`.cli`: the command line.
"""
