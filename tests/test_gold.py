"""The Gold dbt project itself: its documentation in Postgres, its rounding, its unit tests.
Real run-all on the mock API, real Postgres, real dbt, the real CLI."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from mock_api import DataConfig, RetailData
from retailctl import gold
from retailctl.extract import records
from tests.helpers import SMALL_RUN, cli_resource_dir, run_cli

# every test here starts from the same real run-all (mock, Postgres, dbt), built once by the
# conftest's `copy_built` and copied per test; the group keeps it on one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("small_run")]

FOUR_PLACES = Decimal("0.0001")
UNIT_TESTS = (
    "mart_recomputes_each_touched_customer_day_in_full",
    "mart_recomputes_or_removes_each_customer_day_a_sale_left",
    "sales_item_discount_perc_and_day",
    "sales_item_rewrites_each_touched_sale_whole",
)
TABLE_DESCRIPTIONS = """
    select c.relname, obj_description(c.oid, 'pg_class')
    from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
    where n.nspname = 'gold' and c.relkind = 'r'
"""
COLUMN_DESCRIPTIONS = """
    select c.relname, a.attname, col_description(c.oid, a.attnum)
    from pg_class as c
    join pg_namespace as n on n.oid = c.relnamespace
    join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    where n.nspname = 'gold' and c.relkind = 'r'
"""


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql).fetchall()


def documented(data_dir: Path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """The descriptions of the models and the snapshot (and of their columns) in dbt's manifest."""
    manifest = json.loads((data_dir / "dbt" / "target" / "manifest.json").read_text())
    nodes = [node for node in manifest["nodes"].values() if node["resource_type"] in ("model", "snapshot")]
    tables = {node["name"]: node["description"] for node in nodes}
    columns = {
        (node["name"], name): column["description"]
        for node in nodes
        for name, column in node["columns"].items()
    }
    return tables, columns


def test_every_gold_table_and_column_is_described_in_postgres(copy_built) -> None:
    built = copy_built(SMALL_RUN)
    db_url, data_dir = built.db_url, built.data_dir
    assert run_cli(["transform"], env=built.env).returncode == 0  # writes dbt's manifest.json, run-all not
    tables, columns = documented(data_dir)
    assert sorted(tables) == [
        "customers_snapshot",
        "dim_customer",
        "dim_product",
        "mart_sales_by_customer",
        "sales_item",
    ]
    assert dict(query(db_url, TABLE_DESCRIPTIONS)) == tables
    in_postgres = {(table, column): text for table, column, text in query(db_url, COLUMN_DESCRIPTIONS)}
    assert in_postgres == columns  # every column of every table documented, word for word
    assert all(text.strip() for text in [*tables.values(), *columns.values()])

    fact = query(db_url, "select obj_description('gold.sales_item'::regclass, 'pg_class')")[0][0]
    assert fact.startswith("The sales fact. One row per sale line (grain: sale_id + line_no)")
    discount = query(
        db_url,
        "select col_description('gold.sales_item'::regclass, attnum) "
        "from pg_attribute where attrelid = 'gold.sales_item'::regclass "
        "and attname = 'discount_perc'",
    )[0][0]
    assert discount.startswith("Discount off the current list price, as a fraction (0.2500 = 25 % off")
    assert "rounded to 4 decimal places" in discount


def expected_discounts(config: DataConfig) -> tuple[dict[str, Decimal], dict[tuple[str, date], Decimal]]:
    """discount_perc per sales_item_id and avg_discount per (customer, UTC day), from the
    generator: 1 - amount / (list price * quantity), then the mean, each to 4 places."""
    data = RetailData(config)
    prices = {
        product["product_sku"]: Decimal(str(product["unit_amount"]))
        for product in map(data.product, range(data.product_count()))
    }
    lines: dict[str, Decimal] = {}
    pairs: dict[tuple[str, date], list[Decimal]] = defaultdict(list)
    for k in range(config.sales):
        sale = data.sale(k)
        if records.sale_reject_reason(sale):
            continue
        day = datetime.fromisoformat(sale["datetime"]).astimezone(UTC).date()
        for line_no, item in enumerate(sale["items"], start=1):
            price = prices[item["product_sku"]] * item["quantity"]
            discount = (1 - records.decimal_of(item["amount"]) / price).quantize(FOUR_PLACES, ROUND_HALF_UP)
            lines[f"{sale['id']}-{line_no}"] = discount
            pairs[sale["customer_id"], day].append(discount)
    means = {
        pair: (sum(values) / len(values)).quantize(FOUR_PLACES, ROUND_HALF_UP)
        for pair, values in pairs.items()
    }
    return lines, means


def test_the_fact_is_indexed_for_the_hourly_increment_and_for_ranges_of_days(copy_built) -> None:
    db_url = copy_built(SMALL_RUN).db_url
    definitions = query(
        db_url, "select indexdef from pg_indexes where schemaname = 'gold' and tablename = 'sales_item'"
    )
    methods = sorted(definition.split(" USING ")[1] for (definition,) in definitions)
    assert methods == [
        "brin (day)",  # a month of revenue by day reads that month's blocks (docs/scale.md)
        "btree (_source_loaded_at)",
        "btree (_updated_at)",
        "btree (customer_id, day)",
        "btree (sale_id)",
        "btree (sales_item_id)",
    ]


NOT_NULL_COLUMNS = """
    select c.relname, a.attname
    from pg_class as c
    join pg_namespace as n on n.oid = c.relnamespace
    join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    where n.nspname = 'gold' and c.relkind = 'r' and a.attnotnull and c.relname <> 'customers_snapshot'
"""
# the contracts' not_null constraints (the models' ymls): enforced by Postgres on every write,
# in place of a not_null data test per column run every hour
CONTRACT_NOT_NULL = {
    "dim_customer": {"customer_id", "is_inferred", "is_deleted"},
    "dim_product": {"product_id", "is_inferred", "is_deleted"},
    "sales_item": {
        "sales_item_id",
        "sale_id",
        "line_no",
        "sales_datetime",
        "day",
        "customer_id",
        "product_sku",
        "item_amount",
    },
    "mart_sales_by_customer": {"customer_id", "day"},
}


def not_null_columns(db_url: str) -> dict[str, set[str]]:
    columns: dict[str, set[str]] = defaultdict(set)
    for table, column in query(db_url, NOT_NULL_COLUMNS):
        columns[table].add(column)
    return dict(columns)


def test_the_contracts_not_nulls_are_in_postgres_and_added_to_incremental_tables_built_without(
    copy_built,
) -> None:
    built = copy_built(SMALL_RUN)
    assert not_null_columns(built.db_url) == CONTRACT_NOT_NULL
    with psycopg.connect(built.db_url, autocommit=True) as conn:
        # the incremental tables as an older retailctl built them, without the constraints
        conn.execute(
            "alter table gold.sales_item alter column day drop not null, alter column sale_id drop not null"
        )
        conn.execute("alter table gold.mart_sales_by_customer alter column customer_id drop not null")
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("update gold.dim_product set is_deleted = null")
    assert not_null_columns(built.db_url)["sales_item"] == CONTRACT_NOT_NULL["sales_item"] - {
        "day",
        "sale_id",
    }
    transformed = run_cli(["transform", "--json"], env=built.env)
    assert transformed.returncode == 0, transformed.stderr
    assert not_null_columns(built.db_url) == CONTRACT_NOT_NULL
    # one dbt invocation builds the snapshot and every model, and runs no test
    [command] = json.loads(transformed.stdout)["commands"]
    assert command["command"].startswith("build ")
    assert sorted((node["kind"], node["name"], node["status"]) for node in command["nodes"]) == [
        ("model", "dim_customer", "success"),
        ("model", "dim_product", "success"),
        ("model", "mart_sales_by_customer", "success"),
        ("model", "sales_item", "success"),
        ("snapshot", "customers_snapshot", "success"),
    ]


def test_the_tables_run_all_knows_fresh_are_those_the_sources_give_a_freshness_rule() -> None:
    """run-all skips `source freshness` when its load wrote every gold.FRESHNESS_CHECKED table:
    that list must be the one models/sources.yml checks."""
    sources = yaml.safe_load((cli_resource_dir("dbt") / "models" / "sources.yml").read_text())
    [silver] = sources["sources"]
    assert silver["freshness"]["error_after"] is not None
    checked = [table["name"] for table in silver["tables"] if table.get("freshness", silver["freshness"])]
    assert sorted(checked) == sorted(gold.FRESHNESS_CHECKED)


def test_discounts_are_stored_to_4_decimal_places(copy_built) -> None:
    db_url = copy_built(SMALL_RUN).db_url
    lines, means = expected_discounts(SMALL_RUN)
    fact = query(db_url, "select sales_item_id, discount_perc::text from gold.sales_item")
    assert dict(fact) == {key: str(value) for key, value in lines.items()}  # 4 places, as text
    mart = query(db_url, "select customer_id, day, avg_discount::text from gold.mart_sales_by_customer")
    assert {(customer, day): mean for customer, day, mean in mart} == {
        key: str(value) for key, value in means.items()
    }


def test_unit_tests_run_in_retailctl_test_and_a_failing_one_exits_3(copy_built) -> None:
    built = copy_built(SMALL_RUN)
    cli_env, db_url = built.env, built.db_url
    passing = run_cli(["test"], env=cli_env)
    assert passing.returncode == 0, passing.stderr
    lines = passing.stdout.splitlines()
    for name in UNIT_TESTS:
        assert any(line.startswith(f"unit_test {name}: pass in ") for line in lines), name

    # dict fixtures are cast to the built tables' column types: a fact whose discount_perc
    # lost three decimals turns the mart's given 0.1500 into 0.2, so its average comes out wrong
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("alter table gold.sales_item alter column discount_perc type numeric(5, 1)")
    failing = run_cli(["test"], env=cli_env)
    assert failing.returncode == 3
    assert f"unit_test {UNIT_TESTS[0]}: fail in " in failing.stdout
    assert failing.stderr.splitlines()[-1] == (
        f"error: 1 dbt test(s) failed: {UNIT_TESTS[0]}: unit test output differs from its expected rows"
    )
