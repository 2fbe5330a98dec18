"""Row-level rules: which rows of a batch go to the quarantine instead of being scored, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow as pa

    from include.nightshift.spec import ModelSpec


def row_rules(spec: ModelSpec) -> list[tuple[str, Callable[[pa.RecordBatch], pa.Array]]]:
    """(rule, function returning a boolean "row breaks it" mask), in the order they are checked.

    The rules are the spec's: non-null entity key and non-nullable features, finite numbers,
    ``min``/``max`` and ``categories``. A row is quarantined under the first rule it breaks.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    def null(col: str) -> Callable[[pa.RecordBatch], pa.Array]:
        return lambda b: pc.is_null(b.column(col), nan_is_null=True)

    rules: list[tuple[str, Callable[[pa.RecordBatch], pa.Array]]] = [
        (f"{spec.entity_key} not null", null(spec.entity_key))
    ]
    for f in spec.features:
        if not f.nullable:
            rules.append((f"{f.name} not null", null(f.name)))
        if f.type == "float":

            def infinite(b: pa.RecordBatch, c: str = f.name) -> Any:
                return pc.fill_null(pc.is_inf(b.column(c)), False)

            rules.append((f"{f.name} finite", infinite))
        if f.type in ("int", "float") and (f.min is not None or f.max is not None):
            lo, hi = f.min, f.max

            def out_of_range(b: pa.RecordBatch, c: str = f.name, lo: float | None = lo, hi: float | None = hi) -> Any:
                col = b.column(c)
                bad = pa.array([False] * len(col)) if lo is None else pc.less(col, lo)
                if hi is not None:
                    bad = pc.or_(bad, pc.greater(col, hi))
                return pc.fill_null(bad, False)

            rules.append((f"{f.name} between {_num(lo)} and {_num(hi)}", out_of_range))
        if f.type == "category":
            allowed = pa.array(list(f.categories or ()))

            def not_in(b: pa.RecordBatch, c: str = f.name, allowed: pa.Array = allowed) -> Any:
                col = b.column(c)
                return pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, value_set=allowed)))

            rules.append((f"{f.name} in [{', '.join(f.categories or ())}]", not_in))
    return rules


def _num(v: float | None) -> str:
    if v is None:
        return "-inf"
    return str(int(v)) if float(v).is_integer() else str(v)


def split_batch(
    batch: pa.RecordBatch, rules: list[tuple[str, Callable[[pa.RecordBatch], pa.Array]]]
) -> tuple[pa.RecordBatch, pa.RecordBatch | None, pa.Array | None]:
    """(rows that pass every rule, rows that break one, the first broken rule of each of those)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rule_of = pa.nulls(batch.num_rows, pa.string())
    # Later rules first, so the first rule a row breaks is the one that sticks.
    for name, breaks in reversed(rules):
        rule_of = pc.if_else(breaks(batch), pa.scalar(name), rule_of)
    bad = pc.is_valid(rule_of)
    if not pc.any(bad).as_py():
        return batch, None, None
    return batch.filter(pc.invert(bad)), batch.filter(bad), rule_of.filter(bad)


def with_derived(spec: ModelSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with the spec's derived features added, so that their rules apply row by row too."""
    if not spec.derived:
        return batch
    import pyarrow as pa

    from include.nightshift.features import derive

    frame = derive(spec, batch.to_pandas())
    for name, _ in spec.derived:
        batch = batch.append_column(name, pa.array(frame[name], from_pandas=True))
    return batch
