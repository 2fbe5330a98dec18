"""The day's input: is it there and usable, how it splits into shards, and the sample the input suite reads."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from include.nightshift.errors import DataValidationError, MissingPartitionError
from include.nightshift.validation import schema_problems

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    import pyarrow as pa

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage


@dataclass(frozen=True)
class Shard:
    """A contiguous run of Parquet row groups of the day's file."""

    index: int
    row_groups: tuple[int, ...]
    rows: int
    of: int = 1  # the day's number of shards

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "row_groups": list(self.row_groups), "rows": self.rows, "of": self.of}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shard:
        return cls(int(d["index"]), tuple(int(g) for g in d["row_groups"]), int(d["rows"]), int(d.get("of", 1)))


def plan_shards(row_group_rows: list[int], shard_rows: int, slots: int = 1) -> list[Shard]:
    """Group consecutive row groups into shards of about ``shard_rows`` rows.

    A day bigger than one shard gets a multiple of ``slots`` shards of about equal size (never larger
    than ``shard_rows`` on average): 10M rows on 2 slots are 6 shards in 3 full waves, not 5 shards whose
    last wave leaves a slot idle. A single row group is never split, so a file written as one huge row
    group is one shard.
    """
    total = sum(row_group_rows)
    count = -(-total // shard_rows) if total else 1
    if count > 1 and slots > 1:
        count = -(-count // slots) * slots
    target = total / count if count else total
    shards: list[Shard] = []
    groups: list[int] = []
    rows = done = 0
    for i, n in enumerate(row_group_rows):
        groups.append(i)
        rows += n
        if done + rows >= (len(shards) + 1) * target - 1e-9 and len(shards) < count - 1:
            shards.append(Shard(len(shards), tuple(groups), rows))
            done += rows
            groups, rows = [], 0
    if groups:
        shards.append(Shard(len(shards), tuple(groups), rows))
    return [replace(s, of=len(shards)) for s in shards]


def check_input_schema(spec: ModelSpec, uri: str, schema: pa.Schema) -> None:
    """The day's file has every column the model needs, with usable types.

    Raises:
        DataValidationError: names the file, the column, its type and what the spec needs.
    """
    problems = schema_problems(spec, "raw_features", uri, schema)
    key = spec.entity_key
    if key in schema.names and spec.scoring.entity_key_type == "bigint":
        import pyarrow.types as pat

        if not pat.is_integer(schema.field(key).type):
            problems.append(
                f"{uri}: column '{key}' has type {schema.field(key).type}; scoring.entity_key_type is bigint"
            )
    if problems:
        raise DataValidationError(
            f"input of {spec.name}_scoring: {len(problems)} schema problem(s):\n  - " + "\n  - ".join(problems)
        )


def inspect_input(storage: Storage, spec: ModelSpec, uri: str) -> tuple[int, list[Shard]]:
    """Check the day's file exists, is not empty and has the right schema; plan its shards.

    Raises:
        MissingPartitionError: there is no file for the day.
        DataValidationError: the file is empty, or its schema breaks the spec.
    """
    import pyarrow.parquet as pq

    if not storage.exists(uri):
        raise MissingPartitionError(
            f"input partition {uri} does not exist: the features of this day have not landed. "
            "The scores of the day were left as they were; re-run the date once the file is there."
        )
    with storage.open_input(uri) as f:
        meta = pq.ParquetFile(f).metadata
        schema = meta.schema.to_arrow_schema()
    total = meta.num_rows
    if total == 0:  # checked first: an empty file's column types say nothing
        raise DataValidationError(
            f"input partition {uri} has 0 rows; a day needs at least 1. The scores of the day were left as they were."
        )
    check_input_schema(spec, uri, schema)
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return total, plan_shards(groups, spec.scoring.shard_rows, spec.scoring.shard_slots)


# With at least this many row groups, the input sample is a share of each (an even spread already).
SPREAD_GROUPS = 8


def read_sample(storage: Storage, spec: ModelSpec, uri: str, day: date, max_rows: int) -> pd.DataFrame:
    """The day's rows for the GX input suite: all of them, or an even spread of ``max_rows`` of them.

    Every row is still checked against the row rules while scoring; the suite judges the day as a
    whole (volume, share of broken rows, distribution) and a sample is enough for that.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.datasets import DATE_COLUMN
    from include.nightshift.validation import SOURCE_COLUMN

    with storage.open_input(uri) as f:
        pf = pq.ParquetFile(f)
        meta = pf.metadata
        total = meta.num_rows
        groups = meta.num_row_groups
        if total > max_rows and groups >= SPREAD_GROUPS:
            # The same share of every row group, read from its start: only the sampled rows are decoded
            # (a stride over every batch decodes the whole day; at 10M rows 1.9 s instead of 0.9 s).
            share = max_rows / total
            parts = []
            for g in range(groups):
                n = int(meta.row_group(g).num_rows * share)
                if n:
                    parts.append(next(pf.iter_batches(batch_size=n, row_groups=[g])))
        else:  # few row groups: an even stride of batches over the day
            step = max(1, -(-total // max_rows))
            batch_rows = max(1000, min(spec.scoring.batch_rows, max_rows))
            parts = [b for i, b in enumerate(pf.iter_batches(batch_size=batch_rows)) if i % step == 0]
    frame = pa.Table.from_batches(parts).to_pandas() if parts else pd.DataFrame()
    frame[SOURCE_COLUMN] = uri
    frame[DATE_COLUMN] = pd.Timestamp(day)
    return frame
