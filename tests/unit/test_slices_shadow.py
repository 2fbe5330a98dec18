"""Spec rules of shadow promotion and slices; slice metrics and the live (shadow) decision on tiny frames."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from include.nightshift.errors import SpecError
from include.nightshift.monitoring import slices
from include.nightshift.shadow import pooled
from include.nightshift.spec import DEFAULT_MODELS_DIR, load_spec, validate_spec
from include.nightshift.warehouse import Tables

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((DEFAULT_MODELS_DIR / "churn.yaml").read_text())


def with_keys(raw: dict, **sections: dict) -> dict:
    out = copy.deepcopy(raw)
    for name, values in sections.items():
        out[name] = {**(out.get(name) or {}), **values}
    return out


def load(tmp_path, raw: dict):
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def test_defaults_keep_the_offline_gate_and_no_slices(raw):
    spec = validate_spec(raw)
    assert (spec.promotion.mode, spec.promotion.shadow_days) == ("gate", 7)
    assert (spec.monitoring.slices, spec.monitoring.min_slice_rows) == ((), 200)


def test_shadow_mode_and_slices_load(raw):
    spec = validate_spec(
        with_keys(raw, promotion={"mode": "shadow", "shadow_days": 3}, monitoring={"slices": ["region"]})
    )
    assert spec.promotion.mode == "shadow" and spec.promotion.shadow_days == 3
    assert spec.monitoring.slices == ("region",)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"promotion": {"mode": "canary"}}, "promotion.mode"),
        ({"promotion": {"mode": "shadow", "shadow_days": 0}}, "promotion.shadow_days"),
        ({"monitoring": {"slices": ["country"]}}, "'country' is not a feature"),
        ({"monitoring": {"slices": ["tenure_months"]}}, "'tenure_months' is a feature of type 'int'"),
        ({"monitoring": {"slices": ["region", "region"]}}, "must be distinct"),
        ({"monitoring": {"min_slice_rows": 5}}, "monitoring.min_slice_rows"),
    ],
)
def test_bad_shadow_or_slice_keys_name_the_key_and_value(tmp_path, raw, sections, message):
    with pytest.raises(SpecError, match=message):
        load(tmp_path, with_keys(raw, **sections))


def test_a_model_name_may_not_end_in_shadow(tmp_path, raw):
    bad = {**copy.deepcopy(raw), "name": "churn_shadow"}
    with pytest.raises(SpecError, match="may not end in '_shadow'"):
        load(tmp_path, bad)


def test_a_derived_category_may_be_a_slice(raw):
    features = [
        *raw["features"],
        {
            "name": "tenure_band",
            "type": "category",
            "categories": ["new", "old"],
            "expr": "where(tenure_months < 12, 'new', 'old')",
        },
    ]
    spec = validate_spec({**with_keys(raw, monitoring={"slices": ["tenure_band"]}), "features": features})
    assert spec.monitoring.slices == ("tenure_band",)


def test_shadow_tables_never_meet_the_champions(spec):
    champ, shadow = Tables.for_spec(spec), Tables.for_spec(spec, shadow=True)
    assert shadow.scores == "churn_shadow_scores" and shadow.shadow
    assert shadow.partition(pd.Timestamp("2026-11-20").date()) == "churn_shadow_scores_p20261120"
    assert champ.scores == "churn_scores" and not champ.shadow
    assert shadow.score_columns == champ.score_columns  # same columns and lineage


def labelled_day(rows_per_region: int = 400, broken: str | None = "south", seed: int = 3) -> pd.DataFrame:
    """Scored rows with labels: good scores everywhere, random ones in the ``broken`` region."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, region in enumerate(["central", "east", "north", "south", "west"]):
        y = rng.integers(0, 2, rows_per_region)
        good = np.clip(y * 0.6 + rng.normal(0.2, 0.15, rows_per_region), 0, 1)
        score = rng.random(rows_per_region) if region == broken else good
        parts.append(
            pd.DataFrame(
                {"customer_id": np.arange(rows_per_region) + i * 10_000, "score": score, "churned": y, "region": region}
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_a_failing_region_is_named_while_the_day_stays_above_its_floor(raw):
    spec = validate_spec(with_keys(raw, monitoring={"slices": ["region"], "min_slice_rows": 200}))
    joined = labelled_day()
    from include.nightshift.monitoring.performance import decay_reasons, joined_metrics

    overall = joined_metrics(spec, joined)
    assert overall["roc_auc"] >= spec.monitoring.performance_floors["roc_auc"]
    assert decay_reasons(spec, overall, {}) == []
    rows = slices.slice_performance(spec, joined, {"roc_auc": 0.9})
    broken = [r for r in rows if r.reasons]
    assert [(r.feature, r.value, r.labelled_rows) for r in broken] == [("region", "south", 400)]
    assert any(
        "region=south (400 rows): roc_auc" in reason and "performance_floors.roc_auc" in reason
        for reason in broken[0].reasons
    )
    worst = slices.worst_slice(spec, rows)
    assert worst is not None and worst.value == "south"


def test_small_slices_are_counted_not_judged(raw):
    spec = validate_spec(with_keys(raw, monitoring={"slices": ["region"], "min_slice_rows": 500}))
    rows = slices.slice_performance(spec, labelled_day(rows_per_region=400), {})
    assert {r.judged for r in rows} == {False}
    assert {r.labelled_rows for r in rows} == {400}
    assert slices.worst_slice(spec, rows) is None


def test_missing_category_values_are_their_own_slice():
    frame = pd.DataFrame({"payment_method": ["card", None, "card"]})
    assert slices.slice_values(frame, "payment_method").tolist() == ["card", "(null)", "card"]


def test_pooled_metrics_weight_days_by_their_rows():
    out = pooled([(100, {"roc_auc": 0.8}), (300, {"roc_auc": 0.6, "pr_auc": 0.5})])
    assert out["roc_auc"] == pytest.approx(0.65)
    assert out["pr_auc"] == pytest.approx(0.5)
