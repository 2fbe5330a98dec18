"""Drift and realised-performance monitoring, one module per concern.

- :mod:`.days`: which published days a run looks at, and what the warehouse says about a day;
- :mod:`.drift`: Evidently's drift verdicts of a day against the version's reference sample;
- :mod:`.performance`: realised metrics of a scored day once its labels land, and decay;
- :mod:`.schema`: the ``monitoring`` tables analysts chart.

This package never imports Airflow; functions receive a psycopg2 connection, an MLflow client or frames.
"""

from include.nightshift.monitoring.days import (
    MonitoredDay,
    PublishedDay,
    days_to_monitor,
    published_day,
    read_day_scores,
    unmonitored_days,
)
from include.nightshift.monitoring.drift import (
    REPORT_NAME,
    DriftCheck,
    DriftResult,
    DriftRun,
    FeatureDrift,
    check_day,
    feature_verdicts,
    frame_for_drift,
    run_evidently,
    sample_day,
    write_drift,
)
from include.nightshift.monitoring.performance import (
    PerformanceCheck,
    PerformanceRow,
    calibration_error,
    decay_reasons,
    measure_day,
    realised_performance,
    write_performance,
)
from include.nightshift.monitoring.schema import SCHEMA, ensure_schema

__all__ = [
    "REPORT_NAME",
    "SCHEMA",
    "DriftCheck",
    "DriftResult",
    "DriftRun",
    "FeatureDrift",
    "MonitoredDay",
    "PerformanceCheck",
    "PerformanceRow",
    "PublishedDay",
    "calibration_error",
    "check_day",
    "days_to_monitor",
    "decay_reasons",
    "ensure_schema",
    "feature_verdicts",
    "frame_for_drift",
    "measure_day",
    "published_day",
    "read_day_scores",
    "realised_performance",
    "run_evidently",
    "sample_day",
    "unmonitored_days",
    "write_drift",
    "write_performance",
]
