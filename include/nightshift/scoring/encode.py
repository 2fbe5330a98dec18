"""Predicting a batch and serialising it for PostgreSQL's COPY (binary for integer keys, else CSV)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from include.nightshift.spec import ModelSpec


def predict(spec: ModelSpec, model: Any, batch: pa.RecordBatch) -> np.ndarray:
    """Positive-class probabilities for a batch, with the model input the signature expects."""
    from include.nightshift.training import model_input

    frame = batch.select(spec.feature_names).to_pandas()
    return model.predict_proba(model_input(spec, frame))[:, 1]


# PostgreSQL's binary COPY format: a header, then per row a field count and length-prefixed big-endian
# values, then a trailer. For an integer key every row has the same layout, so numpy writes a whole
# batch at once and the server does no number parsing (CSV float parsing was its largest cost).
COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def scores_binary(keys: pa.Array, scores: np.ndarray, threshold: float) -> bytes:
    """Binary COPY rows ``(bigint key, float8 score, int2 predicted_label)``."""
    import numpy as np

    row = np.dtype(
        [("n", ">i2"), ("kl", ">i4"), ("k", ">i8"), ("sl", ">i4"), ("s", ">f8"), ("pl", ">i4"), ("p", ">i2")]
    )
    out = np.empty(len(scores), dtype=row)
    out["n"], out["kl"], out["sl"], out["pl"] = 3, 8, 8, 2
    out["k"] = keys.to_numpy(zero_copy_only=False)
    out["s"] = scores
    out["p"] = scores >= threshold
    return out.tobytes()


def scores_csv(keys: pa.Array, scores: np.ndarray, threshold: float) -> bytes:
    """CSV rows ``key,score,predicted_label`` for COPY (text keys; Arrow's writer, no loop per row)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(
        {"k": keys, "score": pa.array(scores, pa.float64()), "label": pa.array((scores >= threshold).astype(np.int8))}
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def quarantine_csv(spec: ModelSpec, rows: pa.RecordBatch, rules: pa.Array) -> bytes:
    """CSV rows ``entity_key,rule,row-as-json`` for the quarantine staging table."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    frame = rows.select([spec.entity_key, *spec.feature_names]).to_pandas()
    as_json = frame.to_json(orient="records", lines=True, date_format="iso").splitlines()
    table = pa.table(
        {
            "key": pc.cast(rows.column(spec.entity_key), pa.string()),
            "rule": rules,
            "row": pa.array(as_json, pa.string()),
        }
    )
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()
