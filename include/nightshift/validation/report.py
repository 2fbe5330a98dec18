"""GX results for people: one line per failed rule with what was observed and in which files.

Every function takes a GX validation result as ``describe_dict()`` returns it.
"""

from __future__ import annotations

from typing import Any

from include.nightshift.validation.schema import SOURCE_COLUMN


def _plain(value: Any) -> Any:
    """numpy scalars as plain Python values, so messages read ``450.0`` and not ``np.float64(450.0)``."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value


def _describe_kwargs(kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k not in ("batch_id", "result_format") and v is not None}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _rule(e: dict[str, Any]) -> str:
    return f"{e['expectation_type']}({_describe_kwargs(e.get('kwargs', {}))})"


def _observed(e: dict[str, Any]) -> str:
    """What an expectation saw: rows that break it with examples and files, or the observed value."""
    r = e.get("result") or {}
    if "unexpected_count" in r:
        examples = [_plain(c["value"]) for c in r.get("partial_unexpected_counts", [])][:5]
        files = sorted(
            {row.get(SOURCE_COLUMN) for row in r.get("partial_unexpected_index_list") or [] if row.get(SOURCE_COLUMN)}
        )
        observed = (
            f"{r['unexpected_count']} of {r.get('element_count')} rows break it "
            f"({r.get('unexpected_percent') or 0:.2f}%)"
        )
        if r["unexpected_count"]:
            observed += f", e.g. {examples}"
        if files:
            observed += f", in {', '.join(files[:3])}"
        return observed
    if "observed_value" in r:
        return f"observed {_plain(r['observed_value'])!r}"
    if not r and e.get("success"):  # a passing suite is validated pass-or-fail (validation/run.py)
        return "passed"
    return "column not found" if "column" in e.get("kwargs", {}) else "could not be evaluated"


def describe_failures(result: dict[str, Any], limit: int = 12) -> list[str]:
    """One line per failed expectation: the rule, what was observed, and which files.

    Args:
        result: A GX validation result as ``describe_dict()`` returns it.
    """
    lines = [f"{_rule(e)}: {_observed(e)}" for e in result.get("expectations", []) if not e.get("success")]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def expectation_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every expectation of a result, failed ones first: ``{"rule", "success", "observed"}``."""
    rows = [
        {"rule": _rule(e), "success": bool(e.get("success")), "observed": _observed(e)}
        for e in result.get("expectations", [])
    ]
    return sorted(rows, key=lambda row: row["success"])


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """A compact record of a validation (for MLflow and XCom): statistics and the failed rules."""
    return {
        "success": bool(result.get("success")),
        "statistics": result.get("statistics"),
        "failures": describe_failures(result),
    }
