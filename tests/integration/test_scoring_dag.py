"""The scoring DAG with ``dag.test()``: real Postgres warehouse, real MLflow registry.

The module uses its own model names (``scorer``, a copy of the churn spec, and ``nochamp``, which is
never trained), so that it neither needs nor disturbs the champion the training tests build.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

import pytest

from tests.conftest import DATA_END
from tests.integration.helpers import query, run_dag, train_champion, use_models_dir

pytestmark = pytest.mark.integration

DAY = DATA_END - timedelta(days=1)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models dir with churn, ``scorer`` and ``nochamp`` (same landing data as churn)."""
    from include.nightshift.spec import DEFAULT_MODELS_DIR

    d = tmp_path_factory.mktemp("models")
    src = (DEFAULT_MODELS_DIR / "churn.yaml").read_text()
    shutil.copy(DEFAULT_MODELS_DIR / "churn.yaml", d / "churn.yaml")
    for name in ("scorer", "nochamp"):
        text = src.replace("\nname: churn\n", f"\nname: {name}\n")
        # Small shards, so that a test day of 30,000 rows is scored by three mapped tasks.
        (d / f"{name}.yaml").write_text(text + "\nscoring:\n  shard_rows: 10000\n  batch_rows: 4000\n")
    restore = use_models_dir(d)
    yield d
    restore()


@pytest.fixture(scope="module")
def scorer(models_dir, landing, mlflow_client):
    """The ``scorer`` spec with a trained, promoted ``@champion``."""
    from include.nightshift.spec import load_model

    spec = load_model("scorer")
    train_champion(mlflow_client, spec, landing, DATA_END)
    return spec


def day_rows(conn, model, day):
    return query(
        conn,
        f"SELECT customer_id, score, predicted_label, model_version, dag_run_id FROM nightshift.{model}_scores "
        "WHERE score_date = %s ORDER BY customer_id",
        (day,),
    )


def input_rows(spec, landing, day) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(spec.landing.features(landing, day.isoformat()).removeprefix("file://")).num_rows


def test_rerunning_a_date_three_times_leaves_exactly_one_copy(scorer, landing, warehouse, mlflow_client):
    from nightshift_airflow.factory import scoring_dag

    n = input_rows(scorer, landing, DAY)
    seen = []
    for _ in range(3):
        result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})
        assert result.state == "success", result
        rows = day_rows(warehouse, "scorer", DAY)
        assert len(rows) == n
        seen.append([r[:4] for r in rows])
        assert len({r[4] for r in rows}) == 1, "one DAG run wrote the whole day"
    assert seen[0] == seen[1] == seen[2], "same input, same champion: identical scores"
    champion = mlflow_client.get_model_version_by_alias("scorer", "champion")
    assert {r[3] for r in seen[0]} == {int(champion.version)}
    assert all(0.0 <= r[1] <= 1.0 for r in seen[0])
    # One partition per day, nothing left in staging, the view answers.
    parts = query(
        warehouse,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'nightshift.scorer_scores'::regclass",
    )
    assert parts == [(f"scorer_scores_p{DAY:%Y%m%d}",)]
    assert query(
        warehouse, "SELECT count(*) FROM pg_tables WHERE schemaname = 'nightshift_staging' AND tablename LIKE 'scorer%'"
    ) == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM nightshift.scorer_latest_scores")[0][0] == n


def test_a_scoring_run_reports_its_lineage(scorer, platform, landing, mlflow_client):
    """OpenLineage (file transport): the day's landing file and the pinned model version in, the
    published table out, and the GX results as data-quality facets, named by the OpenLineage conventions."""
    from tests.integration.helpers import lineage_of

    result = run_dag(scoring_dag_of(scorer), DATA_END, conf={"run_date": DAY.isoformat()})
    assert result.state == "success", result
    events = lineage_of(platform, result.run_id)

    version = mlflow_client.get_model_version_by_alias("scorer", "champion").version
    landing_file = scorer.landing.features(landing, DAY.isoformat()).removeprefix("file://")
    model = {"namespace": f"mlflow://127.0.0.1:{platform.mlflow_port}", "name": f"scorer/versions/{version}"}
    server = f"postgres://{os.environ['NIGHTSHIFT_PG_HOST']}:{os.environ['NIGHTSHIFT_PG_PORT']}"
    published = {"namespace": server, "name": f"{platform.db('warehouse')}.nightshift.scorer_scores"}

    def names(datasets):
        return [{"namespace": d["namespace"], "name": d["name"]} for d in datasets]

    assert names(events["publish"]["inputs"]) == [{"namespace": "file", "name": landing_file}, model]
    assert names(events["publish"]["outputs"]) == [published]
    assert {"namespace": "file", "name": landing_file} in names(events["score"]["inputs"])
    (checked,) = events["validate_input"]["inputs"]
    assertions = checked["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert checked["name"] == landing_file and assertions and all(a["success"] for a in assertions)
    assert any(a["assertion"] == "expect_column_values_to_not_be_null" for a in assertions), assertions
    (staged,) = events["validate_output"]["inputs"]
    assert staged["namespace"] == server and staged["name"].startswith(
        f"{platform.db('warehouse')}.nightshift_staging."
    )
    assert "dataQualityAssertions" in staged["inputFacets"]


def scoring_dag_of(spec):
    from nightshift_airflow.factory import scoring_dag

    return scoring_dag(spec)


def test_bad_rows_go_to_quarantine_and_the_counts_add_up(scorer, platform, warehouse, tmp_path, monkeypatch):
    import pandas as pd

    from include.nightshift.storage import Storage
    from nightshift_airflow.factory import scoring_dag

    root = (tmp_path / "landing").as_uri()
    storage = Storage()
    df = storage.read_parquet(scorer.landing.features(platform.landing_root, DAY.isoformat()))
    df.loc[:2, "tenure_months"] = -3  # 3 rows out of range
    df.loc[3, "region"] = "atlantis"  # 1 unknown category
    df["customer_id"] = df["customer_id"].astype("int64")
    storage.write_parquet(pd.DataFrame(df), scorer.landing.features(root, DAY.isoformat()))
    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", root)

    result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "success", result
    scored = day_rows(warehouse, "scorer", DAY)
    run_id = scored[0][4]
    quarantined = query(
        warehouse,
        "SELECT entity_key, rule, row->>'tenure_months' FROM nightshift.scorer_quarantine "
        "WHERE score_date = %s AND dag_run_id = %s ORDER BY rule, entity_key",
        (DAY, run_id),
    )
    assert len(scored) + len(quarantined) == len(df)
    rules = [q[1] for q in quarantined]
    assert rules.count("tenure_months between 0 and 120") == 3
    assert rules.count("region in [north, south, east, west, central]") == 1
    assert {q[0] for q in quarantined}.isdisjoint({str(r[0]) for r in scored})


def test_no_champion_fails_at_once_and_touches_nothing(models_dir, landing, warehouse):
    from include.nightshift.spec import load_model
    from nightshift_airflow.factory import scoring_dag

    result = run_dag(scoring_dag(load_model("nochamp")), DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "failed"
    assert result.failed_task() == "resolve_run"
    assert "no @champion for model nochamp" in result.errors["resolve_run"]
    assert result.tasks["score"] in (None, "upstream_failed")
    assert query(warehouse, "SELECT to_regclass('nightshift.nochamp_scores')") == [(None,)]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param("missing", "does not exist: the features of this day have not landed", id="missing"),
        pytest.param("empty", "has 0 rows", id="empty"),
    ],
)
def test_missing_or_empty_input_fails_and_keeps_the_scores(
    kind, expected, scorer, landing, warehouse, tmp_path, monkeypatch
):
    import pandas as pd

    from include.nightshift.storage import Storage
    from nightshift_airflow.factory import scoring_dag

    before = day_rows(warehouse, "scorer", DAY)
    assert before, "an earlier test published this day"
    root = (tmp_path / "landing").as_uri()
    if kind == "empty":
        df = Storage().read_parquet(scorer.landing.features(landing, DAY.isoformat())).head(0)
        Storage().write_parquet(pd.DataFrame(df), scorer.landing.features(root, DAY.isoformat()))
    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", root)

    result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "failed"
    assert result.failed_task() == "resolve_run"
    assert expected in result.errors["resolve_run"], result.errors
    assert f"date={DAY}" in result.errors["resolve_run"]
    assert day_rows(warehouse, "scorer", DAY) == before


def test_too_many_broken_rows_fail_the_input_suite_and_keep_the_scores(
    scorer, landing, warehouse, tmp_path, monkeypatch
):
    from include.nightshift.storage import Storage
    from nightshift_airflow.factory import scoring_dag

    before = day_rows(warehouse, "scorer", DAY)
    root = (tmp_path / "landing").as_uri()
    df = Storage().read_parquet(scorer.landing.features(landing, DAY.isoformat()))
    df.loc[: len(df) // 10, "monthly_charges"] = 9999.0  # 10 %: far above the 1 % quarantine threshold
    Storage().write_parquet(df, scorer.landing.features(root, DAY.isoformat()))
    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", root)

    result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "failed"
    assert result.failed_task() == "validate_input"
    message = result.errors["validate_input"]
    assert "scorer_scoring_input" in message and "monthly_charges" in message and "9999" in message
    assert f"the published scores of {DAY} are unchanged" in message
    assert day_rows(warehouse, "scorer", DAY) == before
    assert query(warehouse, "SELECT count(*) FROM nightshift_staging.score_leases WHERE model = 'scorer'") == [(0,)], (
        "the failed run gave the date back"
    )
    # The shards ran beside the suite: they end as skipped (or done, had they finished first), never
    # as a second failure, and their staging tables went with the date.
    assert result.tasks["score"] in ("skipped", "success"), result.tasks
    assert [t for t, state in result.tasks.items() if state == "failed"] == ["validate_input"], result.tasks
    assert result.tasks["publish"] == "upstream_failed"
    from include.nightshift import warehouse as wh

    assert wh.staging_tables(warehouse, wh.Tables.for_spec(scorer), DAY) == []


def test_a_new_day_is_published_as_an_asset_event(scorer, landing, warehouse):
    from nightshift_airflow.factory import scoring_dag

    day = DATA_END
    result = run_dag(scoring_dag(scorer), day)

    assert result.state == "success", result
    assert len(day_rows(warehouse, "scorer", day)) == input_rows(scorer, landing, day)
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).order_by(AssetEvent.id.desc())).all()
        extras = [e.extra for e in events if e.extra.get("score_date") == day.isoformat()]
    assert extras and extras[0]["rows"] == input_rows(scorer, landing, day)
    assert extras[0]["partition"] == f"nightshift.scorer_scores_p{day:%Y%m%d}"


def test_a_large_day_is_scored_by_mapped_shards_and_published_once(scorer, platform, warehouse, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.nightshift.storage import Storage
    from nightshift_airflow.factory import scoring_dag

    day = DATA_END - timedelta(days=2)
    base = Storage().read_parquet(scorer.landing.features(platform.landing_root, day.isoformat()))
    copies = []
    for i in range(15):  # 15 x 2,000 rows with distinct keys
        part = base.copy()
        part["customer_id"] = part["customer_id"].astype("int64") + i * 1_000_000
        copies.append(part)
    import pandas as pd

    frame = pd.concat(copies, ignore_index=True)
    root = tmp_path / "landing"
    path = scorer.landing.features(root.as_uri(), day.isoformat()).removeprefix("file://")
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=10_000)
    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", root.as_uri())

    result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": day.isoformat()})

    assert result.state == "success", result
    assert len(day_rows(warehouse, "scorer", day)) == 30_000
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        mapped = session.scalars(
            select(TaskInstance.map_index).where(
                TaskInstance.dag_id == "scorer_scoring",
                TaskInstance.task_id == "score",
                TaskInstance.state == "success",
            )
        ).all()
    assert {0, 1, 2} <= set(mapped), "three shards, three mapped task instances"


def test_a_claim_left_by_a_run_that_is_gone_does_not_block_the_date(scorer, landing, warehouse):
    from include.nightshift import warehouse as wh
    from nightshift_airflow.factory import scoring_dag

    tables = wh.Tables.for_spec(scorer)
    # A claim whose holder is no DAG run at all: e.g. a run deleted from the metadata DB after its
    # worker was killed. (Taken over without waiting for scoring.lease_timeout_minutes.)
    wh.claim(warehouse, tables, DAY, "manual__killed-and-never-retried", 30, holder_alive=lambda run: False)

    result = run_dag(scoring_dag(scorer), DATA_END, conf={"run_date": DAY.isoformat()})

    assert result.state == "success", result
    assert query(warehouse, "SELECT count(*) FROM nightshift_staging.score_leases WHERE model = 'scorer'") == [(0,)]
