"""Shadow challengers and slice monitoring with ``dag.test()``: real Postgres and MLflow.

Models of this module: ``shadowed`` (churn in ``promotion.mode: shadow`` with ``shadow_days: 2``,
reading churn's landing data) and ``sliced`` (churn with ``monitoring.slices: [region]`` and a landing
area of its own, whose labels of one day are broken for one region).
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pytest

from tests.conftest import DATA_DAYS, DATA_END
from tests.integration.helpers import query, run_dag, train_champion, use_models_dir

pytestmark = pytest.mark.integration

LABELLED = [DATA_END - timedelta(days=9), DATA_END - timedelta(days=8)]  # their labels have landed
MONITORED = [d + timedelta(days=7) for d in LABELLED]  # monitoring these measures LABELLED (delay 7)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from include.nightshift.spec import DEFAULT_MODELS_DIR

    d = tmp_path_factory.mktemp("models")
    src = (DEFAULT_MODELS_DIR / "churn.yaml").read_text()
    shutil.copy(DEFAULT_MODELS_DIR / "churn.yaml", d / "churn.yaml")
    shadowed = src.replace("\nname: churn\n", "\nname: shadowed\n").replace(
        "  approval: false", "  approval: false\n  mode: shadow\n  shadow_days: 2"
    )
    sliced = (
        src.replace("\nname: churn\n", "\nname: sliced\n")
        .replace("{root}/churn/", "{root}/sliced/")
        .replace("  sample_rows: 100000", "  sample_rows: 100000\n  slices: [region]\n  min_slice_rows: 150")
        .replace("performance_floors: {roc_auc: 0.70}", "performance_floors: {roc_auc: 0.65}")
        .replace("max_decay: {roc_auc: 0.05}", "max_decay: {roc_auc: 0.10}")
    )
    assert "mode: shadow" in shadowed and "slices: [region]" in sliced and "{roc_auc: 0.65}" in sliced
    (d / "shadowed.yaml").write_text(shadowed)
    (d / "sliced.yaml").write_text(sliced)
    restore = use_models_dir(d)
    yield d
    restore()


@pytest.fixture(scope="module")
def shadowed(models_dir, landing, mlflow_client):
    from include.nightshift.spec import load_model

    spec = load_model("shadowed")
    train_champion(mlflow_client, spec, landing, DATA_END)
    return spec


def score(spec, day):
    from nightshift_airflow.factory import scoring_dag

    result = run_dag(scoring_dag(spec), day, conf={"run_date": day.isoformat()})
    assert result.state == "success", result


def shadow_score(spec, day):
    from nightshift_airflow.factory import shadow_dag

    return run_dag(shadow_dag(spec), day, conf={"run_date": day.isoformat()})


def monitor(spec, day):
    from nightshift_airflow.factory import monitoring_dag

    return run_dag(monitoring_dag(spec), day, conf={"score_date": day.isoformat()})


def aliases(client, name):
    return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_a_passing_challenger_enters_shadow_and_the_champion_stays(shadowed, mlflow_client, warehouse):
    from nightshift_airflow.factory import training_dag

    before = aliases(mlflow_client, "shadowed")
    result = run_dag(training_dag(shadowed), DATA_END, conf={"algorithm": "logistic_regression"})

    assert result.state == "success", result
    assert result.tasks["gate"] == "success" and result.tasks["promote"] == "skipped"
    after = aliases(mlflow_client, "shadowed")
    assert after["champion"] == before["champion"]
    new = after["challenger"]
    assert new > before["champion"]
    tags = mlflow_client.get_model_version("shadowed", str(new)).tags
    assert tags["nightshift.shadow"] == "in_shadow" and tags["nightshift.gate"] == "passed"
    rows = query(
        warehouse,
        "SELECT version, champion_version, action FROM monitoring.shadow_decisions "
        "WHERE model = 'shadowed' ORDER BY id",
    )
    assert rows == [(new, before["champion"], "entered")]


def test_shadow_scores_go_to_their_own_table_beside_the_champions(shadowed, mlflow_client, warehouse):
    versions = aliases(mlflow_client, "shadowed")
    for day in (*LABELLED, *MONITORED):
        score(shadowed, day)
    for day in LABELLED:
        result = shadow_score(shadowed, day)
        assert result.state == "success", result

    shadow = query(
        warehouse,
        "SELECT score_date, model_version, model_name, count(*) FROM nightshift.shadowed_shadow_scores "
        "GROUP BY 1, 2, 3 ORDER BY 1",
    )
    champion = query(
        warehouse,
        "SELECT score_date, model_version, count(*) FROM nightshift.shadowed_scores "
        "WHERE score_date = ANY(%s) GROUP BY 1, 2 ORDER BY 1",
        (LABELLED,),
    )
    assert [(d, v) for d, v, _, _ in shadow] == [(d, versions["challenger"]) for d in LABELLED]
    assert [(d, v) for d, v, _ in champion] == [(d, versions["champion"]) for d in LABELLED]
    assert [n for *_, n in shadow] == [n for *_, n in champion]  # every row of the day, in both
    latest = query(warehouse, "SELECT DISTINCT model_version FROM nightshift.shadowed_latest_scores")
    assert latest == [(versions["champion"],)]  # shadow scores are nobody's latest score

    # The champion's days with no shadow run (an Asset event folded into an earlier run reaches none)
    # are what the next asset-triggered shadow run catches up.
    from include.nightshift.scoring.shadow import days_to_catch_up

    assert days_to_catch_up(warehouse, shadowed, int(versions["challenger"])) == sorted(MONITORED)


def test_a_challenger_that_wins_live_is_promoted_after_shadow_days(shadowed, mlflow_client, warehouse):
    versions = aliases(mlflow_client, "shadowed")
    first = monitor(shadowed, MONITORED[0])
    assert first.state == "success", first
    assert first.tasks["shadow_measure"] == "success"
    assert first.tasks["shadow_gate"] == "skipped" and first.tasks["promote_shadow"] == "skipped"
    assert aliases(mlflow_client, "shadowed")["champion"] == versions["champion"]

    second = monitor(shadowed, MONITORED[1])

    assert second.state == "success", second
    assert second.tasks["shadow_gate"] == "success" and second.tasks["promote_shadow"] == "success"
    after = aliases(mlflow_client, "shadowed")
    assert after == {"champion": versions["challenger"]}  # promoted; @challenger is free again
    perf = query(
        warehouse,
        "SELECT score_date, role, model_version, labelled_rows, roc_auc FROM "
        "monitoring.shadow_performance WHERE model = 'shadowed' ORDER BY 1, 2",
    )
    assert [(d, r) for d, r, *_ in perf] == [(d, r) for d in LABELLED for r in ("challenger", "champion")]
    assert all(n >= 1000 and 0.7 < auc < 1 for *_, n, auc in perf)
    (move,) = query(
        warehouse, "SELECT from_version, to_version, kind, reason FROM monitoring.promotions WHERE model = 'shadowed'"
    )
    assert move[:3] == (str(versions["champion"]), str(versions["challenger"]), "shadow")
    assert "shadow gate passed on 2 live days" in move[3] and "live figures: " in move[3], move
    (decision,) = query(
        warehouse,
        "SELECT action, days FROM monitoring.shadow_decisions WHERE model = 'shadowed' AND action = 'promoted'",
    )
    assert decision == ("promoted", 2)
    tags = mlflow_client.get_model_version("shadowed", str(versions["challenger"])).tags
    assert tags["nightshift.shadow"] == "promoted" and tags["nightshift.promotion_kind"] == "shadow"


def weak_version(client, spec, landing):
    """A version that knows only the customer's region and payment method (worse live), registered quietly."""
    from include.nightshift import datasets, registry, training
    from include.nightshift.spec import validate_spec
    from include.nightshift.storage import Storage

    raw = spec.model_dump(by_alias=True)
    raw["features"] = [f for f in raw["features"] if f["name"] in ("region", "payment_method")]
    weak = validate_spec(raw)
    window = datasets.resolve_window(weak, DATA_END)
    ts = datasets.load_training_set(Storage(), weak, landing, window)
    trained = training.train_and_log(client, weak, ts, window, "logistic_regression", {})
    mv = registry.register(client, weak, trained.model_uri, trained.model_id, trained.run_id, {}, set_challenger=False)
    return int(mv.version)


def test_a_challenger_that_loses_live_is_retired_and_the_champion_untouched(
    shadowed, landing, mlflow_client, warehouse
):
    from include.nightshift import shadow

    champion = aliases(mlflow_client, "shadowed")["champion"]
    weak = weak_version(mlflow_client, shadowed, landing)
    shadow.enter_shadow(
        warehouse,
        mlflow_client,
        shadowed,
        weak,
        champion,
        "test: as if it passed offline",
        shadow.Step("test", "loses-live"),
    )
    for day in LABELLED:
        assert shadow_score(shadowed, day).state == "success"
    for day in MONITORED:
        result = monitor(shadowed, day)
        assert result.state == "success", result

    assert result.tasks["shadow_gate"] == "success" and result.tasks["promote_shadow"] == "skipped"
    assert aliases(mlflow_client, "shadowed") == {"champion": champion}
    tags = mlflow_client.get_model_version("shadowed", str(weak)).tags
    assert tags["nightshift.shadow"] == "retired"
    assert "shadow gate rejected" in tags["nightshift.shadow_reason"] and "roc_auc" in tags["nightshift.shadow_reason"]
    (row,) = query(
        warehouse,
        "SELECT action, reason, figures FROM monitoring.shadow_decisions WHERE model = 'shadowed' "
        "AND version = %s AND action = 'retired'",
        (weak,),
    )
    assert row[2]["challenger"]["roc_auc"] < row[2]["champion"]["roc_auc"] - 0.01
    assert query(warehouse, "SELECT count(*) FROM monitoring.promotions WHERE model = 'shadowed'") == [(1,)]


def test_the_champions_publish_succeeds_when_shadow_scoring_fails(shadowed, landing, mlflow_client, warehouse):
    from include.nightshift import shadow

    champion = aliases(mlflow_client, "shadowed")["champion"]
    ((older,),) = query(
        warehouse, "SELECT version FROM monitoring.shadow_decisions WHERE model = 'shadowed' AND action = 'retired'"
    )
    step = shadow.Step("test", "fails")
    shadow.enter_shadow(warehouse, mlflow_client, shadowed, older, champion, "test: the older one", step)
    weak = weak_version(mlflow_client, shadowed, landing)
    entry = shadow.enter_shadow(warehouse, mlflow_client, shadowed, weak, champion, "test: a newer one", step)
    # A newer challenger replaces the one in shadow, and says so (tag and row).
    assert entry.replaced == older and f"replacing version {older}" in entry.summary("shadowed")
    assert mlflow_client.get_model_version("shadowed", str(older)).tags["nightshift.shadow"] == "replaced"
    assert aliases(mlflow_client, "shadowed") == {"champion": champion, "challenger": weak}
    replaced = query(
        warehouse, "SELECT reason FROM monitoring.shadow_decisions WHERE model = 'shadowed' AND action = 'replaced'"
    )
    assert replaced == [(f"replaced by version {weak}, a newer challenger that passed the offline gate",)]
    day = MONITORED[1]
    # Injected failure: someone replaced the shadow table with one of another shape.
    query_ = "ALTER TABLE nightshift.shadowed_shadow_scores RENAME TO shadowed_shadow_scores_kept"
    with warehouse.cursor() as cur:
        cur.execute(query_)
        cur.execute("CREATE TABLE nightshift.shadowed_shadow_scores (customer_id bigint)")
    try:
        score(shadowed, day)  # the champion publishes the day
        result = shadow_score(shadowed, day)
    finally:
        with warehouse.cursor() as cur:
            cur.execute("DROP TABLE nightshift.shadowed_shadow_scores")
            cur.execute("ALTER TABLE nightshift.shadowed_shadow_scores_kept RENAME TO shadowed_shadow_scores")

    assert result.state == "failed" and result.tasks["score_shadow"] == "failed"
    assert "shadowed_shadow_scores exists without the column(s)" in result.errors["score_shadow"]
    (published,) = query(
        warehouse, "SELECT count(*), max(model_version) FROM nightshift.shadowed_scores WHERE score_date = %s", (day,)
    )
    assert published[0] >= 1000 and published[1] == champion
    alerts = query(warehouse, "SELECT kind, task_id FROM monitoring.alerts WHERE dag_id = 'shadowed_shadow'")
    assert ("task_failure", "score_shadow") in alerts


@pytest.fixture(scope="module")
def sliced(models_dir, platform, mlflow_client):
    """``sliced`` with its own data set, and random labels for the south region on one labelled day."""
    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage

    spec = load_model("sliced")
    generate(spec, platform.landing_root, SampleOptions(start=DATA_END - timedelta(days=DATA_DAYS - 1), end=DATA_END))
    storage, day = Storage(), LABELLED[1].isoformat()
    features = storage.read_parquet(spec.landing.features(platform.landing_root, day))
    labels = storage.read_parquet(spec.landing.labels(platform.landing_root, day))
    south = set(features.loc[features["region"] == "south", "customer_id"])
    broken = labels["customer_id"].isin(south)
    labels.loc[broken, "churned"] = np.random.default_rng(1).integers(0, 2, broken.sum())
    storage.write_parquet(labels, spec.landing.labels(platform.landing_root, day))
    train_champion(mlflow_client, spec, platform.landing_root, DATA_END)
    return spec


def test_a_failing_region_is_named_while_the_day_stays_above_its_floor(sliced, warehouse):
    score(sliced, LABELLED[1])
    score(sliced, MONITORED[1])

    result = monitor(sliced, MONITORED[1])

    assert result.state == "success", result
    (perf,) = query(
        warehouse,
        "SELECT roc_auc, decayed FROM monitoring.performance WHERE model = 'sliced' AND score_date = %s",
        (LABELLED[1],),
    )
    assert perf[0] >= sliced.monitoring.performance_floors["roc_auc"] and perf[1] is False, perf
    rows = query(
        warehouse,
        "SELECT value, labelled_rows, roc_auc, breached, reasons FROM monitoring.slice_performance "
        "WHERE model = 'sliced' AND score_date = %s AND feature = 'region' ORDER BY value",
        (LABELLED[1],),
    )
    assert [r[0] for r in rows] == ["central", "east", "north", "south", "west"]
    assert [r[0] for r in rows if r[3]] == ["south"], rows
    south = next(r for r in rows if r[0] == "south")
    assert south[2] < 0.65 and f"region=south ({south[1]} rows): roc_auc" in south[4][0]
    assert result.tasks["request_retraining"] == "success"
    (alert,) = query(warehouse, "SELECT error FROM monitoring.alerts WHERE model = 'sliced' AND kind = 'performance'")
    assert f"region=south ({south[1]} rows): roc_auc" in alert[0]
    drift = query(
        warehouse,
        "SELECT value, judged, sampled_rows FROM monitoring.slice_drift WHERE model = 'sliced' "
        "AND score_date = %s ORDER BY value",
        (MONITORED[1],),
    )
    assert [d[0] for d in drift] == ["central", "east", "north", "south", "west"]
    assert all(judged for _, judged, _ in drift) and sum(n for *_, n in drift) == 2000
