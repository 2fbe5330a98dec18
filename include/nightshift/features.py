"""The model's input: the feature columns with the types the model signature expects, and the derived
features computed from them (:class:`DeriveFeatures` is the pipeline step that does it inside the
logged model, so that scoring computes exactly what training did)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sklearn.base import BaseEstimator, TransformerMixin

from include.nightshift.expressions import evaluate, parse

if TYPE_CHECKING:
    import pandas as pd

    from include.nightshift.spec import ModelSpec


def model_input(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The input feature columns in spec order, with dtypes the model signature expects.

    Integers become float64 so that a missing value in tomorrow's data does not break the schema;
    categories are plain strings (object) with None for missing. Derived features are not part of the
    input: the model computes them.
    """
    out = df[spec.input_names].copy()
    for f in spec.input_features:
        if f.type in ("int", "float"):
            out[f.name] = out[f.name].astype("float64")
        else:
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
    return out


def _derive(frame: pd.DataFrame, expressions: list[tuple[str, str]], kinds: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    out = frame.copy()
    for name, text in expressions:
        others: Any = {n: k for n, k in kinds.items() if n != name}
        value = evaluate(parse(text, others), out)
        if not isinstance(value, pd.Series):
            value = pd.Series([value] * len(out), index=out.index)
        if kinds[name] == "text":
            out[name] = value.astype(object).where(value.notna(), None)
        else:
            out[name] = pd.to_numeric(value, errors="coerce").astype("float64")
    return out


def derive(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the spec's derived features added (for the validation suites and drift)."""
    if not spec.derived:
        return frame
    return DeriveFeatures.for_spec(spec).transform(frame)


class DeriveFeatures(TransformerMixin, BaseEstimator):
    """A pipeline step that adds the derived features to the model input, in dependency order.

    It keeps the expressions as text and parses them (with the same checks as the spec loader) when it
    transforms, so the saved model holds only strings and the skops format can load it safely.

    Args:
        expressions: ``[(name, expr), ...]`` in the order to compute them.
        kinds: Every feature's kind: ``number`` or ``text``.
    """

    def __init__(self, expressions: list[tuple[str, str]] | None = None, kinds: dict[str, str] | None = None):
        self.expressions = expressions
        self.kinds = kinds

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> DeriveFeatures:
        exprs = {f.name: f.expr for f in spec.features if f.expr}
        kinds = {f.name: ("text" if f.type == "category" else "number") for f in spec.features}
        return cls([(name, str(exprs[name])) for name, _ in spec.derived], kinds)

    def fit(self, x: Any, y: Any = None) -> DeriveFeatures:
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        return _derive(x, list(self.expressions or []), dict(self.kinds or {}))
