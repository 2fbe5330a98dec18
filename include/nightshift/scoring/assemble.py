"""Assembling a scored day: do the shards' counts add up, is the quarantine within bounds, the primary key.

Above ``scoring.max_quarantine_fraction`` the day fails: the quarantined rows are kept in
``<schema>.<model>_quarantine`` under the DAG run, no scores are published and the date is given back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError
from include.nightshift.warehouse import publishing, staging

if TYPE_CHECKING:
    from psycopg2.extensions import connection

    from include.nightshift.scoring.shard import ShardResult
    from include.nightshift.spec import ModelSpec
    from include.nightshift.warehouse.lease import Lease
    from include.nightshift.warehouse.staging import Constants


@dataclass(frozen=True)
class DayAssembly:
    """The day's staged table and its counts, ready for the output suite and the publish."""

    staged_table: str
    staging_schema: str
    shards: int
    input_rows: int
    scored_rows: int
    quarantined_rows: int
    quarantined_by_rule: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quarantine_counts(results: list[ShardResult]) -> tuple[Counter[str], dict[str, list[str]]]:
    by_rule: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for r in results:
        by_rule.update(r.quarantined)
        for rule, keys in r.examples.items():
            examples.setdefault(rule, []).extend(keys[: 5 - len(examples.get(rule, []))])
    return by_rule, examples


def _too_many_quarantined(
    spec: ModelSpec, consts: Constants, by_rule: Counter[str], examples: dict[str, list[str]], expected: int, kept: int
) -> DataValidationError:
    quarantined = sum(by_rule.values())
    schema, table = spec.scoring.schema_name, f"{spec.name}_quarantine"
    rules = "\n  - ".join(
        f"{rule}: {count} rows, e.g. {spec.entity_key} {', '.join(examples.get(rule, []))}"
        for rule, count in by_rule.most_common()
    )
    return DataValidationError(
        f"{quarantined} of {expected} input rows of {spec.name} for {consts.day} "
        f"({quarantined / expected:.2%}) broke row-level rules; scoring.max_quarantine_fraction is "
        f"{spec.scoring.max_quarantine_fraction:.2%}. No scores were published; the scores of {consts.day} are "
        f"unchanged.\n  - {rules}\nThe {kept} rows are in {schema}.{table}: "
        f"SELECT rule, count(*) FROM {schema}.{table} WHERE dag_run_id = '{consts.dag_run_id}' "
        "GROUP BY rule;"
    )


def assemble_day(
    conn: connection, lease: Lease, spec: ModelSpec, consts: Constants, expected_rows: int, results: list[ShardResult]
) -> DayAssembly:
    """Check the shards' counts and the quarantine threshold, then build the staged day's primary key.

    Args:
        expected_rows: The rows of the day's file when the run started.
        results: Every shard's result.

    Raises:
        DataValidationError: the counts do not add up, too many rows were quarantined, or an entity key
            is there twice. The date is given back (the lease released) and nothing is published.
    """
    results = sorted(results, key=lambda r: r.shard)
    n = len(results)
    input_rows = sum(r.input_rows for r in results)
    scored = sum(r.scored_rows for r in results)
    by_rule, examples = _quarantine_counts(results)
    quarantined = sum(by_rule.values())
    if input_rows != expected_rows or scored + quarantined != expected_rows:
        lease.release()
        raise DataValidationError(
            f"row counts do not add up for {spec.name} {consts.day}: the file has {expected_rows} rows, the "
            f"shards read {input_rows}, scored {scored} and quarantined {quarantined}. Nothing was "
            "published; the input file probably changed during the run. Re-run the date."
        )
    if quarantined / expected_rows > spec.scoring.max_quarantine_fraction:
        kept = publishing.publish_quarantine_only(conn, lease, consts, n)
        raise _too_many_quarantined(spec, consts, by_rule, examples, expected_rows, kept)
    try:
        staged = staging.assemble(conn, lease.tables, consts, n)
    except DataValidationError:
        lease.release()
        raise
    # The staged rows are counted by the output suite's row-count rule, which runs beside this.
    return DayAssembly(staged, lease.tables.staging_schema, n, expected_rows, scored, quarantined, dict(by_rule))
