"""Each problem type end to end with ``dag.test()`` against the real services: train, gate, promote,
score, output suite, drift and realised performance. Also: CSV landing, a SQL source on a real table
in PostgreSQL (with SQL keywords as feature names), and the model contract when a spec is edited.

Models of this module (YAML only): ``offer`` (a copy of the multiclass example), ``spend`` (the
regression example, landing CSV files), ``sqlsrc`` (binary, from a SQL source) and ``editor`` (a churn
copy whose spec is edited after its champion was trained).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_END
from tests.integration.helpers import query, run_dag, use_models_dir

pytestmark = pytest.mark.integration

DAYS = 70  # enough for a window of labelled days of the regression example (labels 30 days late)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from include.nightshift.spec import DEFAULT_MODELS_DIR

    d = tmp_path_factory.mktemp("models")
    for src, name in (("next_offer", "offer"), ("customer_spend", "spend"), ("churn", "editor")):
        text = (DEFAULT_MODELS_DIR / f"{src}.yaml").read_text().replace(f"\nname: {src}\n", f"\nname: {name}\n")
        (d / f"{name}.yaml").write_text(text)
    restore = use_models_dir(d)
    yield d
    restore()


@pytest.fixture(scope="module")
def data(models_dir, platform):
    """Sample data of offer, spend (as CSV files) and editor in the platform's landing root."""
    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_model

    for name in ("offer", "spend", "editor"):
        spec = load_model(name)
        opts = SampleOptions(
            start=DATA_END - timedelta(days=DAYS - 1), end=DATA_END, label_delay_days=spec.target.label_delay_days
        )
        generate(spec, platform.landing_root, opts)
    return platform.landing_root


def _train(spec):
    from nightshift_airflow.factory import training_dag

    result = run_dag(training_dag(spec), DATA_END)
    assert result.state == "success", result
    return result


def _score(spec, day):
    from nightshift_airflow.factory import scoring_dag

    result = run_dag(scoring_dag(spec), DATA_END, conf={"run_date": day.isoformat()})
    assert result.state == "success", result
    return result


def _monitor(spec, day):
    from nightshift_airflow.factory import monitoring_dag

    result = run_dag(monitoring_dag(spec), DATA_END, conf={"score_date": day.isoformat()})
    assert result.state == "success", result
    return result


def _end_to_end(spec, warehouse, mlflow_client):
    """Train and promote, score the labelled day and a later one, monitor the later one."""
    day = DATA_END - timedelta(days=1)
    labelled = day - timedelta(days=spec.target.label_delay_days)
    _train(spec)
    champion = mlflow_client.get_model_version_by_alias(spec.name, "champion")
    for d in (labelled, day):
        result = _score(spec, d)
        assert result.tasks["validate_output"] == "success"
    monitored = _monitor(spec, day)
    return champion, day, labelled, monitored


def test_a_multiclass_model_trains_scores_and_is_monitored(models_dir, data, warehouse, mlflow_client):
    from include.nightshift.spec import load_model

    spec = load_model("offer")
    champion, day, labelled, _ = _end_to_end(spec, warehouse, mlflow_client)

    tags = champion.tags
    assert tags["nightshift.gate"] == "passed" and "accuracy" in tags["nightshift.gate_summary"]
    run = mlflow_client.get_run(champion.run_id)
    assert run.data.metrics["holdout_f1_macro"] > 0.6 and "holdout_roc_auc" not in run.data.metrics
    rows = query(
        warehouse,
        "SELECT predicted_class, score, class_scores, model_version FROM nightshift.offer_scores WHERE score_date = %s",
        (day,),
    )
    assert len(rows) == 2000
    classes = set(spec.target.classes)
    for predicted, score, class_scores, version in rows[:200]:
        assert set(class_scores) == classes and predicted in classes
        assert score == pytest.approx(max(class_scores.values())) and class_scores[predicted] == pytest.approx(score)
        assert sum(class_scores.values()) == pytest.approx(1.0) and version == int(champion.version)
    assert len({r[0] for r in rows}) >= 3, "the model predicts more than one class"
    (perf,) = query(
        warehouse,
        "SELECT target_type, accuracy, f1_macro, log_loss, roc_auc, holdout, report_uri FROM monitoring.performance "
        "WHERE model = 'offer' AND score_date = %s",
        (labelled,),
    )
    assert perf[0] == "multiclass" and perf[1] > 0.6 and perf[2] > 0.5 and perf[3] > 0 and perf[4] is None
    assert set(perf[5]) == {"accuracy", "f1_macro", "log_loss"}
    assert "<html" in Path(perf[6].removeprefix("file://")).read_text()[:2000].lower()
    (drift,) = query(
        warehouse, "SELECT features FROM monitoring.drift_runs WHERE model = 'offer' AND score_date = %s", (day,)
    )
    assert drift[0] == len(spec.features), "the derived features are monitored for drift too"


def test_a_regression_model_lands_csv_trains_scores_and_is_monitored(models_dir, data, warehouse, mlflow_client):
    from include.nightshift.spec import load_model

    spec = load_model("spend")
    champion, day, labelled, monitored = _end_to_end(spec, warehouse, mlflow_client)

    assert mlflow_client.get_run(champion.run_id).data.metrics["holdout_r2"] > 0.5
    rows = query(
        warehouse,
        "SELECT count(*), min(prediction), avg(prediction) FROM nightshift.spend_scores WHERE score_date = %s",
        (day,),
    )
    assert rows[0][0] == 2000 and rows[0][1] > 0 and 50 < rows[0][2] < 150, rows
    cols = {
        r[0]
        for r in query(
            warehouse, "SELECT column_name FROM information_schema.columns WHERE table_name = 'spend_scores'"
        )
    }
    assert "prediction" in cols and not cols & {"score", "predicted_label"}
    (perf,) = query(
        warehouse,
        "SELECT target_type, mae, rmse, r2, mape, decayed FROM monitoring.performance "
        "WHERE model = 'spend' AND score_date = %s",
        (labelled,),
    )
    assert perf[0] == "regression" and 0 < perf[1] < perf[2] < 15 and perf[3] > 0.5 and perf[4] < 0.2, perf
    assert perf[5] is False


# --- a SQL source on a real table, SQL keywords as feature names -----------------------------------------


SQL_SPEC = """
name: sqlsrc
entity_key: customer_id
landing:
  conn_id: nightshift_source
  features_query: |
    SELECT customer_id, tenure_months, monthly_charges, "order", "table"
    FROM src.features WHERE feature_date = %(date)s
  labels_query: SELECT customer_id, churned FROM src.labels WHERE feature_date = %(date)s
features:
  - {name: tenure_months, type: int, min: 0, max: 120}
  - {name: monthly_charges, type: float, min: 0, max: 500}
  - {name: order, type: float, nullable: true}
  - {name: table, type: category, categories: [a, b, c]}
  - {name: select, type: float, expr: "coalesce(order, 0) * 2 + where(table == 'a', 1, 0)"}
target: {name: churned, label_delay_days: 7}
training: {algorithm: logistic_regression, window_days: 10, holdout_days: 2, min_training_rows: 500}
gate: {floors: {roc_auc: 0.6}}
"""


@pytest.fixture(scope="module")
def sql_source(models_dir, data, platform):
    """Tables src.features and src.labels in the warehouse database, filled from the churn sample."""
    import os

    import psycopg2

    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage
    from scripts.stack.postgres import ensure_postgres

    churn = load_model("editor")
    url = f"{ensure_postgres(platform)}/{platform.db('warehouse')}"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS src CASCADE; CREATE SCHEMA src")
        cur.execute(
            "CREATE TABLE src.features (customer_id bigint, feature_date date, tenure_months int, "
            'monthly_charges numeric(8,2), "order" double precision, "table" text)'
        )
        cur.execute("CREATE TABLE src.labels (customer_id bigint, feature_date date, churned int)")
        for i in range(16):
            day = DATA_END - timedelta(days=i)
            df = Storage().read_parquet(churn.landing.features(platform.landing_root, day.isoformat()))
            rows = [
                (
                    int(r.customer_id),
                    day,
                    int(r.tenure_months),
                    float(r.monthly_charges),
                    float(r.support_calls_30d) if r.support_calls_30d % 3 else None,
                    "abc"[int(r.customer_id) % 3],
                )
                for r in df.itertuples()
            ]
            cur.executemany("INSERT INTO src.features VALUES (%s, %s, %s, %s, %s, %s)", rows)
            labels = churn.landing.labels(platform.landing_root, day.isoformat())
            if Storage().exists(labels):
                lab = Storage().read_parquet(labels)
                cur.executemany(
                    "INSERT INTO src.labels VALUES (%s, %s, %s)",
                    [(int(r.customer_id), day, int(r.churned)) for r in lab.itertuples()],
                )
        # The source belongs to the data team; the DAGs' writer login may read it (the test checks counts).
        cur.execute(f"GRANT USAGE ON SCHEMA src TO {platform.writer_login}")
        cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA src TO {platform.writer_login}")
    conn.close()
    (models_dir / "sqlsrc.yaml").write_text(SQL_SPEC)
    os.environ["AIRFLOW_CONN_NIGHTSHIFT_SOURCE"] = url.replace("postgresql://", "postgres://", 1)
    yield load_model("sqlsrc")
    os.environ.pop("AIRFLOW_CONN_NIGHTSHIFT_SOURCE", None)


def test_a_sql_source_is_landed_trained_and_scored(sql_source, warehouse, mlflow_client, platform):
    from tests.integration.helpers import lineage_of

    spec = sql_source
    training = _train(spec)
    assert training.tasks["land"] == "success"
    day = DATA_END - timedelta(days=1)
    scoring = _score(spec, day)
    assert scoring.tasks["land"] == "success"
    # OpenLineage: the land task read the source's table on its server and wrote the landed partition.
    land = lineage_of(platform, scoring.run_id)["land"]
    server = f"postgres://{os.environ['NIGHTSHIFT_PG_HOST']}:{os.environ['NIGHTSHIFT_PG_PORT']}"
    read = [(d["namespace"], d["name"]) for d in land["inputs"]]
    assert read == [(server, f"{platform.db('warehouse')}.src.features")], read
    assert [d["name"] for d in land["outputs"]][0].endswith(f"/sqlsrc/landed/features/date={day}/part-0.parquet")
    (n,) = query(warehouse, "SELECT count(*) FROM nightshift.sqlsrc_scores WHERE score_date = %s", (day,))[0]
    (expected,) = query(warehouse, "SELECT count(*) FROM src.features WHERE feature_date = %s", (day,))[0]
    assert n == expected > 0
    champion = mlflow_client.get_model_version_by_alias("sqlsrc", "champion")
    contract = json.loads(Path(mlflow_client.download_artifacts(champion.run_id, "contract.json")).read_text())
    assert [f["name"] for f in contract["features"]] == ["tenure_months", "monthly_charges", "order", "table", "select"]


@pytest.mark.parametrize(
    ("query_text", "expected"),
    [
        pytest.param(
            "SELECT customer_id, churned, 1 AS leftover FROM src.labels WHERE feature_date = %(date)s",
            ["connection 'nightshift_source'", "SELECT customer_id, churned, 1 AS leftover", "unexpected leftover"],
            id="unexpected-column",
        ),
        pytest.param(
            "SELECT customer_id, churned FROM src.no_such_table WHERE feature_date = %(date)s",
            ["connection 'nightshift_source'", "failed", "no_such_table"],
            id="failing-query",
        ),
    ],
)
def test_a_bad_query_fails_at_once_naming_connection_query_and_columns(sql_source, models_dir, query_text, expected):
    from include.nightshift.spec import load_model
    from nightshift_airflow.factory import training_dag

    raw = yaml.safe_load(SQL_SPEC)
    raw["landing"]["labels_query"] = query_text
    (models_dir / "sqlsrc.yaml").write_text(yaml.safe_dump(raw))
    try:
        result = run_dag(training_dag(load_model("sqlsrc")), DATA_END)
    finally:
        (models_dir / "sqlsrc.yaml").write_text(SQL_SPEC)
    assert result.state == "failed" and result.failed_task() == "land"
    for part in expected:
        assert part in result.errors["land"], result.errors
    assert result.error_types["land"] == "AirflowFailException", "a broken query is not retried"


# --- the contract: the champion keeps scoring with its own features ------------------------------------


def test_editing_the_spec_does_not_change_how_the_champion_scores(
    models_dir, data, warehouse, mlflow_client, tmp_path, monkeypatch
):
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage

    spec = load_model("editor")
    _train(spec)
    champion = mlflow_client.get_model_version_by_alias("editor", "champion")
    day = DATA_END - timedelta(days=1)

    # A feature is added to the spec (it is not in the landed data): the champion does not need it.
    raw = yaml.safe_load((models_dir / "editor.yaml").read_text())
    raw["features"].append({"name": "loyalty_points", "type": "float", "min": 0})
    (models_dir / "editor.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    edited = load_model("editor")
    assert "loyalty_points" in edited.feature_names
    _score(edited, day)
    (version,) = query(
        warehouse, "SELECT DISTINCT model_version FROM nightshift.editor_scores WHERE score_date = %s", (day,)
    )[0]
    assert version == int(champion.version)

    # A feature is dropped from the spec (the data still has it): the champion still scores with it.
    raw["features"] = [f for f in raw["features"] if f["name"] != "region"]
    (models_dir / "editor.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dropped = load_model("editor")
    assert "region" not in dropped.feature_names
    assert _score(dropped, day).tasks["score"] == "success"

    # The landed data loses a column the champion needs: resolve_run says so at once, with no retry.
    root = tmp_path / "landing"
    df = Storage().read_parquet(spec.landing.features(data, day.isoformat())).drop(columns=["region"])
    Storage().write_parquet(df, spec.landing.features(root.as_uri(), day.isoformat()))
    monkeypatch.setenv("AIRFLOW_VAR_NIGHTSHIFT_LANDING_ROOT", root.as_uri())
    from nightshift_airflow.factory import scoring_dag

    result = run_dag(scoring_dag(edited), DATA_END, conf={"run_date": day.isoformat()})
    assert result.state == "failed" and result.failed_task() == "resolve_run"
    message = result.errors["resolve_run"]
    assert f"no column(s) region, which editor version {champion.version}" in message, message
    assert "retrain editor" in message and "restore the column(s)" in message
    assert result.error_types["resolve_run"] == "AirflowFailException"
