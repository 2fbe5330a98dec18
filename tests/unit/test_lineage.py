"""OpenLineage names of what the platform reads and writes (the conventions at openlineage.io/docs/spec/naming)."""

from __future__ import annotations

import pytest

from include.nightshift import lineage

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "file:///srv/landing/churn/date=2026-11-20/part-0.parquet",
            ("file", "/srv/landing/churn/date=2026-11-20/part-0.parquet"),
        ),
        ("s3://lake/landing/churn/x.parquet", ("s3://lake", "landing/churn/x.parquet")),
    ],
    ids=["file", "s3"],
)
def test_files_are_named_by_the_openlineage_conventions(uri, expected):
    assert lineage.file_dataset(uri) == expected


def test_a_table_is_named_by_server_and_database_without_credentials():
    name = lineage.table_dataset("postgresql://writer:s3cret@db.internal:6543/warehouse", "nightshift", "churn_scores")
    assert name == ("postgres://db.internal:6543", "warehouse.nightshift.churn_scores")
    assert "s3cret" not in str(name)


def test_gx_results_become_data_quality_assertions_on_the_input():
    result = {
        "expectations": [
            {
                "expectation_type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "tenure"},
                "success": True,
            },
            {"expectation_type": "expect_table_row_count_to_be_between", "kwargs": {}, "success": False},
        ]
    }
    record = lineage.Lineage()
    record.read(lineage.file_dataset("s3://lake/a.parquet"), dataQualityAssertions=lineage.quality_assertions(result))
    record.wrote(lineage.model_version_dataset("http://mlflow:5000", "churn", 3))
    (read,), (wrote,) = record.datasets()

    facet = read.inputFacets["dataQualityAssertions"]
    assert [(a.assertion, a.success, a.column) for a in facet.assertions] == [
        ("expect_column_values_to_not_be_null", True, "tenure"),
        ("expect_table_row_count_to_be_between", False, None),
    ]
    assert (wrote.namespace, wrote.name) == ("mlflow://mlflow:5000", "churn/versions/3")


def test_a_sql_sources_tables_are_named_by_its_server_and_database():
    query = (
        'SELECT f.customer_id, "order" FROM src.features f JOIN customers c USING (customer_id) WHERE day = %(date)s'
    )
    tables = lineage.query_tables(query, "postgres", "crm.internal", 5432, "crm")
    assert sorted(tables) == [
        ("postgres://crm.internal:5432", "crm.public.customers"),
        ("postgres://crm.internal:5432", "crm.src.features"),
    ]
    assert lineage.query_tables("SELECT pg_sleep(1) WHERE %(date)s IS NOT NULL", "postgres", "h", 5432, "d") == []
