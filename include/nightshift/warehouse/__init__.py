"""The scored tables in PostgreSQL, one module per concern.

- :mod:`.tables`: the names and columns of a model's tables;
- :mod:`.schema`: their DDL, comments and the analyst role's grants;
- :mod:`.lease`: the per-date lease (one run writes a date at a time);
- :mod:`.staging`: the run's staging tables and shard ledger, the COPY statements, assembling the day;
- :mod:`.publishing`: the atomic swap of a day's partition;
- :mod:`.roles`: the writer login every DAG connects as (least privilege).

This package never imports Airflow; functions receive a psycopg2 connection.
"""

from include.nightshift.pg import ANALYST_ROLE, role_exists
from include.nightshift.warehouse.lease import (
    DateGivenBackError,
    Lease,
    ScoreDateBusyError,
    claim,
    given_back,
    given_back_message,
)
from include.nightshift.warehouse.publishing import Published, publish, publish_quarantine_only
from include.nightshift.warehouse.schema import ensure_analyst_login, ensure_analyst_role, ensure_tables, partition_days
from include.nightshift.warehouse.staging import (
    STAGING_COMMENT,
    Constants,
    assemble,
    copy_quarantine_sql,
    copy_scores_sql,
    count_rows,
    create_quarantine_staging,
    duplicate_keys_error,
    ensure_scores_staging,
    ledger_table,
    scores_table,
    staging_tables,
)
from include.nightshift.warehouse.tables import COPY_COLUMNS, OUTPUT_COLUMNS, QUARANTINE_COLUMNS, SCORE_COLUMNS, Tables

__all__ = [
    "ANALYST_ROLE",
    "COPY_COLUMNS",
    "OUTPUT_COLUMNS",
    "QUARANTINE_COLUMNS",
    "SCORE_COLUMNS",
    "STAGING_COMMENT",
    "Constants",
    "Lease",
    "Published",
    "ScoreDateBusyError",
    "DateGivenBackError",
    "given_back",
    "given_back_message",
    "Tables",
    "assemble",
    "claim",
    "copy_quarantine_sql",
    "copy_scores_sql",
    "count_rows",
    "create_quarantine_staging",
    "duplicate_keys_error",
    "ensure_analyst_login",
    "ensure_analyst_role",
    "ensure_scores_staging",
    "ensure_tables",
    "ledger_table",
    "partition_days",
    "publish",
    "publish_quarantine_only",
    "role_exists",
    "scores_table",
    "staging_tables",
]
