-- Runs once, when the compose Postgres volume is first created: the MLflow and warehouse databases
-- beside Airflow's own (POSTGRES_DB). The analyst role is created by `airflow-init`.
CREATE DATABASE mlflow;
CREATE DATABASE nightshift_warehouse;
