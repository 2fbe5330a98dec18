"""Where a task keeps its full GX result: derived from the work root and the task's identity.

The validation tasks write their full result to :func:`result_uri`, and the result page reads it from
there, computed again from the identity in the page's address. The location is never taken from an
XCom: XComs can be written over the REST API by anyone allowed to edit a run, so a ``result_uri`` in
the ``summary`` XCom is only a claim, and the page refuses a summary whose claim differs
(:func:`claimed_elsewhere`). The identity comes from a URL and is validated like any untrusted input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from include.nightshift.storage import join_uri

# Airflow's own rule for DAG and task ids (``airflow.utils.helpers.KEY_REGEX``), and its limit.
_KEY = re.compile(r"^[\w.-]{1,250}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class InvalidTaskKeyError(ValueError):
    """A task identity that cannot name a result (a bad id, a path segment such as ``..``)."""


def _segment(value: str, what: str) -> str:
    if not _KEY.match(value) or set(value) == {"."}:
        raise InvalidTaskKeyError(
            f"{what} {value[:80]!r} is not a valid Airflow id (letters, digits, '_', '-', '.'; at most 250)"
        )
    return value


def run_segment(run_id: str) -> str:
    """A DAG run id made safe for a path segment (``manual__2026-11-20T00:00:00+00:00`` → ``..._00_00``)."""
    if not run_id or len(run_id) > 250 or any(ord(c) < 32 for c in run_id):
        raise InvalidTaskKeyError(f"run_id {run_id[:80]!r} is empty, longer than 250 or holds control characters")
    slug = _UNSAFE.sub("_", run_id)
    return "_" + slug if set(slug) == {"."} else slug


@dataclass(frozen=True)
class TaskKey:
    """A task instance's identity, checked: it becomes part of a path.

    Raises:
        InvalidTaskKeyError: an id that is not one Airflow accepts, or a map index below -1.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def __post_init__(self) -> None:
        _segment(self.dag_id, "dag_id")
        _segment(self.task_id, "task_id")
        run_segment(self.run_id)
        if not isinstance(self.map_index, int) or self.map_index < -1:
            raise InvalidTaskKeyError(f"map_index {self.map_index!r} is not -1 or a non-negative integer")


def result_uri(work_root: str, key: TaskKey) -> str:
    """Where the task ``key`` keeps its full GX result under ``work_root``.

    ``<work_root>/validation/<dag_id>/<run>/<task_id>/gx_result.json``, and for a mapped task
    ``.../<task_id>/map_index=<n>/gx_result.json``. Every segment is checked, so the result always lies
    under the work root.
    """
    if not work_root or "://" not in work_root:
        raise InvalidTaskKeyError(f"the work root {work_root!r} is not a URI (file:// or s3://)")
    parts = ["validation", key.dag_id, run_segment(key.run_id), key.task_id]
    if key.map_index >= 0:
        parts.append(f"map_index={key.map_index}")
    uri = join_uri(work_root, *parts, "gx_result.json")
    if not uri.startswith(work_root.rstrip("/") + "/validation/"):  # cannot happen with checked segments
        raise InvalidTaskKeyError(f"{uri} does not lie under the work root {work_root}")
    return uri


def claimed_elsewhere(summary: dict, expected: str) -> str | None:
    """The ``result_uri`` a summary names when it is not ``expected`` (a tampered XCom), else None."""
    claimed = summary.get("result_uri")
    if claimed in (None, "", expected):
        return None
    return str(claimed)
