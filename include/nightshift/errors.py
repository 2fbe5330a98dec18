"""Exceptions raised by the Nightshift library.

Operators map them: bad data and bad config are final (no retry); everything else is retried.
"""

from __future__ import annotations


class NightshiftError(Exception):
    """Base class. Messages say what failed, the observed value against the rule, and where to look."""


class SpecError(NightshiftError):
    """A model spec file is invalid."""


class ParamsError(NightshiftError):
    """A DAG run was triggered with parameters that break a rule."""


class RollbackError(ParamsError):
    """The requested version may not become champion (missing, never validated)."""


class DataValidationError(NightshiftError):
    """Input or output data broke a validation rule (a GX suite, a missing partition, too few rows)."""


class MissingPartitionError(DataValidationError):
    """A date partition the run needs is not there."""


class NoChampionError(NightshiftError):
    """The registry holds no ``@champion`` version for the model."""


class SourceUnavailableError(NightshiftError):
    """A source system (the database behind a SQL source) could not be reached: retried."""


class NotPublishedYetError(NightshiftError):
    """Monitoring was asked about a day whose scores are not published (yet): retried, as they may be on the way."""


# Failures that retrying cannot fix.
FINAL_ERRORS: tuple[type[Exception], ...] = (SpecError, ParamsError, DataValidationError, NoChampionError)
