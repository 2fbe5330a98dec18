"""Predicting a batch and serialising it for PostgreSQL's COPY.

Binary COPY where every row has the same layout (an integer key with a binary model's score and label,
or a regression's prediction); CSV otherwise (text keys, and the multiclass model's class and JSON).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from include.nightshift.spec import ModelSpec


def predict(spec: ModelSpec, model: Any, batch: pa.RecordBatch) -> np.ndarray:
    """The model's outputs for a batch (see ``pipeline.predict_outputs``), from the input it expects."""
    from include.nightshift.features import model_input
    from include.nightshift.pipeline import predict_outputs

    frame = batch.select(spec.input_names).to_pandas()
    return predict_outputs(spec, model, model_input(spec, frame))


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


def prediction_binary(keys: pa.Array, prediction: np.ndarray) -> bytes:
    """Binary COPY rows ``(bigint key, float8 prediction)`` of a regression."""
    import numpy as np

    row = np.dtype([("n", ">i2"), ("kl", ">i4"), ("k", ">i8"), ("pl", ">i4"), ("p", ">f8")])
    out = np.empty(len(prediction), dtype=row)
    out["n"], out["kl"], out["pl"] = 2, 8, 8
    out["k"] = keys.to_numpy(zero_copy_only=False)
    out["p"] = prediction
    return out.tobytes()


def prediction_csv(keys: pa.Array, prediction: np.ndarray) -> bytes:
    """CSV rows ``key,prediction`` of a regression."""
    import pyarrow as pa

    return _csv(pa.table({"k": keys, "p": pa.array(prediction, pa.float64())}))


def classes_csv(keys: pa.Array, proba: np.ndarray, classes: tuple[str, ...]) -> bytes:
    """CSV rows ``key,predicted_class,score,class_scores`` of a multiclass model (JSON built per column)."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    best = proba.argmax(axis=1)
    parts: list[Any] = []
    for j, label in enumerate(classes):
        prefix = ("{" if j == 0 else ", ") + json.dumps(label) + ": "
        parts += [pa.scalar(prefix), pc.cast(pa.array(proba[:, j], pa.float64()), pa.string())]
    parts.append(pa.scalar("}"))
    scores = pc.binary_join_element_wise(*parts, pa.scalar(""))
    table = pa.table(
        {
            "k": keys,
            "c": pa.array(np.asarray(classes, dtype=object)[best], pa.string()),
            "s": pa.array(proba[np.arange(len(best)), best], pa.float64()),
            "j": scores,
        }
    )
    return _csv(table)


def _csv(table: pa.Table) -> bytes:
    import pyarrow.csv as pacsv

    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def encoder(spec: ModelSpec, binary: bool) -> Any:
    """``encode(keys, outputs) -> bytes`` for the spec's target type; ``binary`` COPY or CSV."""
    kind = spec.target.type
    if kind == "multiclass":
        return lambda keys, proba: classes_csv(keys, proba, tuple(spec.target.classes or ()))
    if kind == "regression":
        return prediction_binary if binary else prediction_csv
    threshold = spec.training.decision_threshold
    if binary:
        return lambda keys, scores: scores_binary(keys, scores, threshold)
    return lambda keys, scores: scores_csv(keys, scores, threshold)


def binary_copy(spec: ModelSpec, key_type: str) -> bool:
    """Whether the day is loaded with binary COPY (integer keys and fixed-size outputs)."""
    return key_type == "bigint" and spec.target.type != "multiclass"
