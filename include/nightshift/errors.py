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


class ServiceUnavailableError(NightshiftError):
    """A service the task needs (MLflow, PostgreSQL, S3) did not answer: retried.

    The message names the service and its URL (never credentials) and what to check.
    """

    def __init__(self, service: str, url: str, cause: object, todo: str) -> None:
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        super().__init__(
            f"{service} at {url} is unreachable ({type(cause).__name__}: {reason}). {todo} "
            "The task is retried (runs.retries); nothing was published by this try."
        )
        self.service, self.url = service, url


# Failures that retrying cannot fix.
FINAL_ERRORS: tuple[type[Exception], ...] = (SpecError, ParamsError, DataValidationError, NoChampionError)
