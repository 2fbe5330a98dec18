"""Which columns, types and files a stage expects: each landing file's schema is checked on its own.

GX validates one frame. Partitions are concatenated with a ``source_file`` column so a failed row
rule names the file it came from; a file whose *schema* is wrong (a missing column, text where a
number belongs) is reported per file before concatenation, because after it the column would only
show up as nulls or mixed types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from include.nightshift.datasets import read_partitions
from include.nightshift.errors import DataValidationError

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    import pyarrow as pa

    from include.nightshift.spec import ModelSpec
    from include.nightshift.storage import Storage

Stage = Literal["raw_features", "raw_labels", "training_set", "scoring_input", "scored_output"]
STAGES: tuple[str, ...] = ("raw_features", "raw_labels", "training_set", "scoring_input", "scored_output")
SOURCE_COLUMN = "source_file"


def suite_name(spec: ModelSpec, stage: str) -> str:
    return f"{spec.name}_{stage}"


def _arrow_kind(t: pa.DataType) -> str:
    import pyarrow.types as pat

    if pat.is_integer(t):
        return "int"
    if pat.is_floating(t) or pat.is_decimal(t):
        return "float"
    if pat.is_string(t) or pat.is_large_string(t) or pat.is_dictionary(t):
        return "string"
    if pat.is_boolean(t):
        return "bool"
    if pat.is_null(t):
        return "null"
    return str(t)


LABEL_KINDS = {"binary": {"int", "bool", "float"}, "multiclass": {"string", "int"}, "regression": {"int", "float"}}


def expected_columns(spec: ModelSpec, stage: str) -> dict[str, set[str]]:
    """Column -> the Arrow kinds accepted for it in landing files of ``stage`` (derived features are not landed)."""
    if stage == "raw_labels":
        return {spec.entity_key: {"int", "string"}, spec.target.name: LABEL_KINDS[spec.target.type]}
    cols = {spec.entity_key: {"int", "string"}}
    for f in spec.input_features:
        # An all-null column of a nullable feature is typed null by writers that cannot infer.
        kinds = {"int"} if f.type == "int" else {"int", "float"} if f.type == "float" else {"string"}
        cols[f.name] = (
            kinds
            | ({"null", "float"} if f.nullable and f.type == "int" else set())
            | ({"null"} if f.nullable else set())
        )
    return cols


def _shown(arrow_type: pa.DataType) -> str:
    # pandas 3 writes its text columns as Arrow large_string; a reader of the message only needs "string".
    import pyarrow.types as pat

    return "string" if pat.is_large_string(arrow_type) else str(arrow_type)


def schema_problems(spec: ModelSpec, stage: str, uri: str, schema: pa.Schema) -> list[str]:
    problems = []
    present = {name: _arrow_kind(schema.field(name).type) for name in schema.names}
    for col, kinds in expected_columns(spec, stage).items():
        if col not in present:
            problems.append(f"{uri}: column '{col}' is missing (present: {', '.join(schema.names)})")
        elif present[col] not in kinds:
            want = " or ".join(sorted(k for k in kinds if k != "null"))
            problems.append(
                f"{uri}: column '{col}' has type {_shown(schema.field(col).type)} ({present[col]}); "
                f"the spec needs {want}"
            )
    return problems


def read_stage(storage: Storage, spec: ModelSpec, stage: Stage, uris: dict[date, str]) -> pd.DataFrame:
    """Read the partitions of a raw stage for validation, checking each file's schema first.

    Raises:
        DataValidationError: a file's schema breaks the spec (every such file is listed).
    """

    problems: list[str] = []
    schema_stage = "raw_features" if stage == "scoring_input" else stage
    for uri in uris.values():
        problems += schema_problems(spec, schema_stage, uri, storage.read_schema(uri))
    if problems:
        raise DataValidationError(
            f"suite {suite_name(spec, stage)}: {len(problems)} schema problem(s) in the landing files:\n  - "
            + "\n  - ".join(problems[:20])
        )
    return read_partitions(storage, uris, source_column=SOURCE_COLUMN)
