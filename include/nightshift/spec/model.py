"""The model spec: one YAML file per model under ``include/models/``, loaded into a frozen object."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from include.nightshift.expressions import Node
from include.nightshift.spec import sections as s
from include.nightshift.spec.metrics import HEADLINE, METRICS
from include.nightshift.spec.names import Frozen, SafeName, check_safe_name
from include.nightshift.spec.sections import Feature

if TYPE_CHECKING:
    from include.nightshift.spec.estimators import Estimator


class ModelSpec(Frozen):
    """A model, as declared in ``include/models/<name>.yaml``."""

    name: SafeName
    description: str = ""
    owner: str = "nightshift"
    tags: tuple[str, ...] = ()
    entity_key: SafeName
    landing: s.Landing
    features: tuple[Feature, ...] = Field(min_length=1)
    target: s.Target
    training: s.Training = s.Training()
    gate: s.Gate = s.Gate()
    promotion: s.Promotion = s.Promotion()
    schedules: s.Schedules = s.Schedules()
    scoring: s.Scoring = s.Scoring()
    monitoring: s.Monitoring = s.Monitoring()
    alerts: s.Alerts = s.Alerts()
    runs: s.Runs = s.Runs()

    _derived: tuple[tuple[str, Node], ...] = PrivateAttr(default=())

    _name_ok = field_validator("name")(lambda cls, v: _not_shadow(check_safe_name(v, "model name")))
    _key_ok = field_validator("entity_key")(lambda cls, v: check_safe_name(v, "entity_key"))

    @field_validator("features")
    @classmethod
    def _expressions_ok(cls, v: tuple[Feature, ...]) -> tuple[Feature, ...]:
        _parse_derived(v)  # an error here is reported under the key 'features'
        return v

    @model_validator(mode="after")
    def _columns_distinct(self) -> ModelSpec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {dupes}")
        for reserved in (self.entity_key, self.target.name, "feature_date"):
            if reserved in names:
                raise ValueError(
                    f"{reserved!r} is the entity key, the target or 'feature_date' and cannot be a feature"
                )
        if not any(not f.derived for f in self.features):
            raise ValueError("at least one feature must come from the data (have no 'expr')")
        self._derived = _parse_derived(self.features)
        _check_slices(self)
        if self.promotion.mode == "shadow" and len(self.name) > 33:
            raise ValueError(
                f"promotion.mode shadow: model name {self.name!r} has {len(self.name)} characters; at most 33 "
                "leave room for its <name>_shadow tables"
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        """Every feature the model uses, derived ones included, in spec order."""
        return [f.name for f in self.features]

    @property
    def input_features(self) -> list[Feature]:
        """The features that come from the data (the columns the landing files and the model input hold)."""
        return [f for f in self.features if not f.derived]

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.input_features]

    @property
    def derived(self) -> tuple[tuple[str, Node], ...]:
        """Derived features in an order where each one's inputs come first: (name, parsed expression)."""
        return self._derived

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.type in ("int", "float")]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "category"]

    @property
    def label_delay(self) -> timedelta:
        return timedelta(days=self.target.label_delay_days)

    @property
    def target_type(self) -> str:
        return self.target.type

    @property
    def metrics(self) -> dict[str, bool]:
        """The metrics of this model's type (name -> higher is better)."""
        return METRICS[self.target.type]

    @property
    def headline_metric(self) -> str:
        return HEADLINE[self.target.type]

    def estimator(self, algorithm: str | None = None) -> Estimator:
        """The estimator of ``algorithm`` (default the spec's); imports a dotted path's module."""
        from include.nightshift.spec.estimators import resolve

        return resolve(self.target.type, algorithm or self.training.algorithm)

    def training_algorithms(self) -> list[str]:
        """The algorithms a run of this model may use: the built-in ones of its type, and the spec's own."""
        from include.nightshift.spec.estimators import builtin_names

        names = list(builtin_names(self.target.type))
        return names if self.training.algorithm in names else [*names, self.training.algorithm]

    def hyperparameters(self, algorithm: str) -> dict[str, Any]:
        return next((dict(p) for name, p in self.training.hyperparameters.items() if name == algorithm), {})


def _not_shadow(name: str) -> str:
    if name.endswith("_shadow"):
        raise ValueError(f"model name {name!r} may not end in '_shadow' (the shadow DAG of a model is <name>_shadow)")
    return name


def _check_slices(spec: ModelSpec) -> None:
    """``monitoring.slices`` name declared categorical features, each once."""
    types = {f.name: f.type for f in spec.features}
    for name in spec.monitoring.slices:
        if name not in types:
            raise ValueError(f"monitoring.slices: {name!r} is not a feature of this model (features: {sorted(types)})")
        if types[name] != "category":
            raise ValueError(
                f"monitoring.slices: {name!r} is a feature of type {types[name]!r}; slices must be category features"
            )
    if len(set(spec.monitoring.slices)) != len(spec.monitoring.slices):
        raise ValueError(f"monitoring.slices must be distinct; got {list(spec.monitoring.slices)}")


def _parse_derived(features: tuple[Feature, ...]) -> tuple[tuple[str, Node], ...]:
    """Parse every ``expr`` against the other features, check its kind, and order them by dependency.

    Raises:
        ValueError: naming the feature, its expression and what is wrong with it.
    """
    from include.nightshift.expressions import ExpressionError, Kind, parse

    kinds: dict[str, Kind] = {f.name: ("text" if f.type == "category" else "number") for f in features}
    parsed: dict[str, Node] = {}
    for f in features:
        if f.expr is None:
            continue
        others = {n: k for n, k in kinds.items() if n != f.name}
        try:
            node = parse(f.expr, others)
        except ExpressionError as exc:
            raise ValueError(f"feature {f.name!r}: expr {f.expr!r}: {exc}") from None
        want = "text" if f.type == "category" else "number"
        got = "number" if node.kind == "bool" else node.kind
        if got != want:
            raise ValueError(f"feature {f.name!r} has type {f.type!r} but its expr {f.expr!r} gives {node.kind}")
        parsed[f.name] = node
    return _in_dependency_order(parsed)


def _in_dependency_order(parsed: dict[str, Node]) -> tuple[tuple[str, Node], ...]:
    done: list[str] = []
    pending = dict(parsed)
    while pending:
        ready = [n for n, node in pending.items() if not (node.columns() & set(pending))]
        if not ready:
            raise ValueError(f"derived features depend on each other in a cycle: {sorted(pending)}")
        for n in ready:
            done.append(n)
            del pending[n]
    return tuple((n, parsed[n]) for n in done)
