# Nightshift's Airflow image: the official Airflow image with this project's pinned requirements.
# astro-CLI compatible: `astro dev start` builds this Dockerfile and mounts dags/, plugins/, include/;
# the Astro Runtime images install packages.txt and requirements.txt the same way (ONBUILD).
# docker-compose.airflow.yml builds it too. Keep the tag in step with apache-airflow in requirements.txt.
FROM apache/airflow:3.3.2-python3.11

USER root
COPY packages.txt /tmp/packages.txt
RUN apt-get update \
    && grep -v '^\s*#' /tmp/packages.txt | xargs --no-run-if-empty apt-get install -y --no-install-recommends \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

USER airflow
# constraints.txt is the full lock of this project (the same one `make` installs with).
COPY requirements.txt constraints.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root great_expectations/ /opt/airflow/great_expectations/
COPY --chown=airflow:root scripts/ /opt/airflow/scripts/
COPY --chown=airflow:root airflow_settings.yaml /opt/airflow/airflow_settings.yaml
ENV PYTHONPATH=/opt/airflow
# The MLflow client's retries bounded (a dead server fails a try in seconds), no progress bars in task
# logs, logging left to Airflow: the same values as MLFLOW_CLIENT_ENV in scripts/stack/settings.py.
ENV MLFLOW_HTTP_REQUEST_MAX_RETRIES=2 \
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1 \
    MLFLOW_HTTP_REQUEST_TIMEOUT=60 \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    MLFLOW_CONFIGURE_LOGGING=false
