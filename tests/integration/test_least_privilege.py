"""Least privilege: the writer login every DAG connects as may publish scores and nothing more.

Real PostgreSQL (the session's platform): the writer is ``<prefix>_writer``, the analyst's role keeps
its grants and denials (tests/integration/test_warehouse.py checks those as before).
"""

from __future__ import annotations

import pytest

from tests.integration.test_warehouse import DAY, model, score_day, write_day  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def server(platform):
    from scripts.stack.postgres import ensure_postgres

    return ensure_postgres(platform)


def as_writer(platform, server, database: str):
    import psycopg2

    from scripts.stack.postgres import writer_url

    url = writer_url(platform, server).rsplit("/", 1)[0] + f"/{database}"
    return psycopg2.connect(url, connect_timeout=5)


def test_the_dags_connection_is_the_writer_login(platform, server):
    import psycopg2

    # what airflow_settings.yaml wrote into the metadata DB (the platform fixture applied it)
    with psycopg2.connect(f"{server}/{platform.db('airflow')}") as meta, meta.cursor() as cur:
        cur.execute("SELECT login FROM connection WHERE conn_id = 'postgres_default'")
        (login,) = cur.fetchone()
    meta.close()
    assert login == platform.writer_login == f"{platform.db_prefix}_writer"


def test_the_writer_cannot_read_airflow_or_mlflow(platform, server):
    import psycopg2

    for purpose in ("airflow", "mlflow"):
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            as_writer(platform, server, platform.db(purpose))


def test_the_writer_cannot_create_roles_databases_or_touch_other_schemas(platform, server, superuser):
    import psycopg2

    other_db = f"{platform.db_prefix}x_warehouse"  # stands for another stack's warehouse on this server
    with superuser.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS someone_else CASCADE")
        cur.execute("CREATE SCHEMA someone_else; CREATE TABLE someone_else.secrets (v text)")
        cur.execute("CREATE TABLE IF NOT EXISTS public.theirs (v text)")
    admin = psycopg2.connect(f"{server}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {other_db}")
        cur.execute(f"CREATE DATABASE {other_db}")
    try:
        with psycopg2.connect(f"{server}/{other_db}") as other, other.cursor() as cur:
            cur.execute("CREATE SCHEMA nightshift; CREATE TABLE nightshift.churn_scores (v int)")
        other.close()
        writer = as_writer(platform, server, platform.db("warehouse"))
        writer.autocommit = True
        denied = [
            "CREATE ROLE intruder LOGIN",
            f"CREATE DATABASE {platform.db_prefix}_mine",
            "ALTER ROLE CURRENT_USER SUPERUSER",
            "CREATE TABLE public.mine (x int)",
            "SELECT * FROM public.theirs",
            "SELECT * FROM someone_else.secrets",
            "CREATE TABLE someone_else.mine (x int)",
        ]
        for statement in denied:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), writer.cursor() as cur:
                cur.execute(statement)
        writer.close()
        elsewhere = as_writer(platform, server, other_db)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), elsewhere.cursor() as cur:
            cur.execute("SELECT * FROM nightshift.churn_scores")
        elsewhere.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {other_db} WITH (FORCE)")
        admin.close()
        with superuser.cursor() as cur:
            cur.execute("DROP SCHEMA someone_else CASCADE; DROP TABLE public.theirs")


def test_the_writer_publishes_a_day_and_owns_its_schemas(platform, server, model, tmp_path):  # noqa: F811
    from include.nightshift.spec import load_model

    base = load_model("churn")
    spec = base.model_copy(update={"scoring": base.scoring.model_copy(update={"schema_name": "t_writer"})})
    conn, qconn = (
        as_writer(platform, server, platform.db("warehouse")),
        as_writer(platform, server, platform.db("warehouse")),
    )
    try:
        total, _ = score_day(conn, qconn, spec, model, write_day(spec, tmp_path.as_uri(), 800), "run-writer")
        assert total == 800
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM t_writer.churn_scores WHERE score_date = %s", (DAY,))
            assert cur.fetchone() == (800,)
            cur.execute(
                "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
                "WHERE nspname IN ('t_writer', 't_writer_staging') ORDER BY 1"
            )
            assert cur.fetchall() == [("t_writer", platform.writer_login), ("t_writer_staging", platform.writer_login)]
    finally:
        conn.close()
        qconn.close()


def test_existing_schemas_are_handed_to_the_writer(platform, server, superuser):
    from scripts.stack.postgres import ensure_writer

    with superuser.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS t_legacy CASCADE")
        cur.execute("CREATE SCHEMA t_legacy; CREATE TABLE t_legacy.old_scores (id bigserial, v int)")
    ensure_writer(platform, server)  # what `make up` runs on an existing warehouse
    with superuser.cursor() as cur:
        cur.execute(
            "SELECT pg_get_userbyid(nspowner), pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = "
            "'t_legacy.old_scores'::regclass)) FROM pg_namespace WHERE nspname = 't_legacy'"
        )
        assert cur.fetchone() == (platform.writer_login, platform.writer_login)
        cur.execute("DROP SCHEMA t_legacy CASCADE")
