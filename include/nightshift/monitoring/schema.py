"""The ``monitoring`` schema analysts chart: drift and realised performance.

``monitoring.alerts`` and ``monitoring.promotions`` are defined next to their owners
(:mod:`include.nightshift.alerts`, :mod:`include.nightshift.promotions`); :func:`ensure_schema`
creates all of them, so one call prepares everything a monitoring run writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.nightshift import alerts, promotions, shadow
from include.nightshift.monitoring import slices
from include.nightshift.pg import MONITORING_DDL_LOCK, run_ddl

if TYPE_CHECKING:
    from psycopg2.extensions import connection

SCHEMA = "monitoring"
DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.drift_runs (
    model text NOT NULL,
    score_date date NOT NULL,
    model_version integer NOT NULL,
    mlflow_run_id text NOT NULL,
    current_rows bigint NOT NULL,
    sampled_rows integer NOT NULL,
    sample_seed bigint NOT NULL,
    reference_rows integer NOT NULL,
    features integer NOT NULL,
    drifted_features integer NOT NULL,
    drift_share double precision NOT NULL,
    drift_share_threshold double precision NOT NULL,
    drifted text[] NOT NULL,
    retraining_requested boolean NOT NULL,
    report_uri text NOT NULL,
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date)
);
CREATE TABLE IF NOT EXISTS monitoring.drift_features (
    model text NOT NULL,
    score_date date NOT NULL,
    feature text NOT NULL,
    stattest text NOT NULL,
    statistic double precision NOT NULL,
    threshold double precision NOT NULL,
    drifted boolean NOT NULL,
    PRIMARY KEY (model, score_date, feature)
);
CREATE TABLE IF NOT EXISTS monitoring.performance (
    model text NOT NULL,
    score_date date NOT NULL,
    model_version integer NOT NULL,
    labelled_rows integer NOT NULL,
    roc_auc double precision,
    pr_auc double precision,
    precision double precision,
    recall double precision,
    brier double precision,
    calibration_error double precision,
    mean_score double precision,
    positive_rate double precision,
    holdout_roc_auc double precision,
    decayed boolean NOT NULL,
    reasons text[] NOT NULL,
    dag_run_id text NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, score_date)
);
-- Realised metrics of multiclass and regression models, the version's holdout metrics, and the report.
ALTER TABLE monitoring.performance
    ADD COLUMN IF NOT EXISTS accuracy double precision,
    ADD COLUMN IF NOT EXISTS f1_macro double precision,
    ADD COLUMN IF NOT EXISTS log_loss double precision,
    ADD COLUMN IF NOT EXISTS mae double precision,
    ADD COLUMN IF NOT EXISTS rmse double precision,
    ADD COLUMN IF NOT EXISTS r2 double precision,
    ADD COLUMN IF NOT EXISTS mape double precision,
    ADD COLUMN IF NOT EXISTS mean_prediction double precision,
    ADD COLUMN IF NOT EXISTS mean_target double precision,
    ADD COLUMN IF NOT EXISTS target_type text NOT NULL DEFAULT 'binary',
    ADD COLUMN IF NOT EXISTS holdout jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS report_uri text;
COMMENT ON COLUMN monitoring.performance.holdout IS
    'The model version''s metrics on its training holdout, {metric: value} (what max_decay compares with)';
COMMENT ON COLUMN monitoring.performance.mape IS 'Mean absolute percentage error as a fraction (0.12 is 12 %)';
-- A model version is an integer, as in the scores tables (these columns were text before).
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['drift_runs', 'performance'] LOOP
        IF (SELECT data_type FROM information_schema.columns WHERE table_schema = 'monitoring'
            AND table_name = t AND column_name = 'model_version') = 'text' THEN
            EXECUTE format('ALTER TABLE monitoring.%I ALTER COLUMN model_version TYPE integer '
                           'USING model_version::integer', t);
        END IF;
    END LOOP;
END $$;
COMMENT ON TABLE monitoring.drift_runs IS
    'Nightshift: one row per model and scored day: how many features drifted against the reference';
COMMENT ON TABLE monitoring.drift_features IS
    'Nightshift: per model, day and feature: the drift test Evidently chose, its statistic, threshold, verdict';
COMMENT ON TABLE monitoring.performance IS
    'Nightshift: realised metrics of a scored day once its labels arrived';
"""


def ensure_schema(conn: connection) -> None:
    """Create the monitoring tables (idempotent) and let the analyst role read them when it exists."""
    run_ddl(conn, MONITORING_DDL_LOCK, DDL, grant_schema=SCHEMA)
    alerts.ensure_table(conn)
    promotions.ensure_table(conn)
    slices.ensure_tables(conn)
    shadow.ensure_tables(conn)
