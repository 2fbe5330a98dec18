"""Batch scoring, one module per step.

- :mod:`.run`: the facts of a scoring run (date, input, pinned model version) shared by its tasks;
- :mod:`.inputs`: the day's file (there, non-empty, the right columns), its shards, the suite's sample;
- :mod:`.rules`: the row-level rules that send a row to the quarantine;
- :mod:`.encode`: predicting a batch and serialising it for COPY;
- :mod:`.shard`: scoring one shard into the run's staging tables;
- :mod:`.assemble`: checking the shards' counts and the quarantine, and building the day's table.

A day larger than ``scoring.shard_rows`` is split into shards of whole Parquet row groups; each shard is
scored by its own (mapped) task into the run's one scores staging table (the shards load it
concurrently), and :mod:`.assemble` builds its primary key.
This package never imports Airflow.
"""

from include.nightshift.scoring.assemble import DayAssembly, assemble_day
from include.nightshift.scoring.encode import (
    COPY_BINARY_HEADER,
    COPY_BINARY_TRAILER,
    predict,
    quarantine_csv,
    scores_binary,
    scores_csv,
)
from include.nightshift.scoring.inputs import Shard, check_input_schema, inspect_input, plan_shards, read_sample
from include.nightshift.scoring.rules import row_rules, split_batch, with_derived
from include.nightshift.scoring.run import ScoringRun
from include.nightshift.scoring.shard import ShardJob, ShardResult, iter_batches, model_threads, score_shard

__all__ = [
    "COPY_BINARY_HEADER",
    "COPY_BINARY_TRAILER",
    "DayAssembly",
    "ScoringRun",
    "Shard",
    "ShardJob",
    "ShardResult",
    "assemble_day",
    "check_input_schema",
    "inspect_input",
    "iter_batches",
    "plan_shards",
    "predict",
    "quarantine_csv",
    "read_sample",
    "row_rules",
    "model_threads",
    "score_shard",
    "scores_binary",
    "scores_csv",
    "split_batch",
    "with_derived",
]
