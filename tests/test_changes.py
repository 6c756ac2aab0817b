"""Changes, not only appends (issue 12, the silver/extract half), end to end: the mock API
corrects published sales and delists customers and products; the real CLI extracts (with the
lookback), loads and runs dbt; silver, the fact and the mart must equal the corrected ground
truth of the mock's generator, and `retailctl verify` must agree.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from mock_api import DataConfig, RetailData
from retailctl.extract import records
from retailctl.extract import sales as extract_sales
from tests.helpers import (
    API_KEY,
    RETAILCTL,
    extract,
    load,
    python_path,
    run_cli,
    settings_for,
    wait_until,
    write_bronze,
)
from tests.helpers.scripted_api import Reply, Request, ScriptedApi

SilverLines = dict[tuple[int, int], tuple[Any, ...]]

SILVER_LINES = """
select l.sale_id, l.line_no, h.customer_id, (h.datetime at time zone 'UTC')::date, l.product_sku,
       l.quantity, l.amount
from silver.sales_product as l join silver.sales_customer as h on h.id = l.sale_id
"""
FACT_LINES = """
select sale_id, line_no, customer_id, day, product_sku, item_quantity, item_amount
from gold.sales_item
"""
MART = "select customer_id, day, n_sales, n_items, total_revenue from gold.mart_sales_by_customer"
GOLD_TABLES = ("dim_customer", "dim_product", "sales_item", "mart_sales_by_customer", "customers_snapshot")
TABLE_CHECKSUM = sql.SQL(
    "select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from gold.{} as t"
)
# every column of the fact but the two times dbt writes: what a delisting must leave alone
FACT_VALUES = """
select count(*), md5(string_agg(row(sales_item_id, sale_id, line_no, sales_datetime, day,
       customer_id, product_sku, item_quantity, item_amount)::text, '|' order by sales_item_id))
from gold.sales_item
"""
# the rows a comparison between two databases holds to: every business column
FACT_ROWS = """
select sales_item_id, sale_id, line_no, sales_datetime, day, customer_id, product_sku,
       product_description, item_quantity, item_amount, unit_amount, discount_perc
from gold.sales_item order by sales_item_id
"""
MART_ROWS = """
select customer_id, day, n_sales, n_items, total_units, total_revenue, avg_discount
from gold.mart_sales_by_customer order by customer_id, day
"""


# -- ground truth -----------------------------------------------------------------------------


def utc_day(moment: str) -> date:
    return datetime.fromisoformat(moment).astimezone(UTC).date()


def truth_lines(data: RetailData) -> SilverLines:
    """(sale id, line no) -> customer, UTC day, product, quantity, amount: the source now."""
    lines: SilverLines = {}
    for k in range(data.sale_count()):
        sale = data.sale(k)
        assert records.sale_reject_reason(sale) is None
        for line_no, item in enumerate(sale["items"], start=1):
            lines[(sale["id"], line_no)] = (
                sale["customer_id"],
                utc_day(sale["datetime"]),
                item["product_sku"],
                item["quantity"],
                records.decimal_of(item["amount"]),
            )
    return lines


def mart_of(lines: SilverLines) -> dict[tuple[str, date], tuple[int, int, Decimal]]:
    """Per (customer, UTC day): sales, lines, revenue."""
    pairs: dict[tuple[str, date], tuple[set[int], int, Decimal]] = {}
    for (sale_id, _), (customer, day, _, _, amount) in lines.items():
        sales, count, revenue = pairs.get((customer, day), (set(), 0, Decimal(0)))
        pairs[(customer, day)] = (sales | {sale_id}, count + 1, revenue + amount)
    return {pair: (len(sales), count, revenue) for pair, (sales, count, revenue) in pairs.items()}


# -- the database -------------------------------------------------------------------------------


def query(
    db_url: str, statement: str | sql.Composable, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def scalar(db_url: str, statement: str, params: tuple[Any, ...] = ()) -> Any:
    return query(db_url, statement, params)[0][0]


def keyed(rows: list[tuple[Any, ...]]) -> SilverLines:
    return {(row[0], row[1]): tuple(row[2:]) for row in rows}


def assert_layers_equal_truth(db_url: str, truth: SilverLines) -> None:
    """Silver, the fact and the mart hold exactly the source's lines: count, sum to the cent,
    every (customer, UTC day) with its sales, lines and revenue."""
    silver = keyed(query(db_url, SILVER_LINES))
    fact = keyed(query(db_url, FACT_LINES))
    assert len(silver) == len(truth) and len(fact) == len(truth)
    assert scalar(db_url, "select count(*) from gold.sales_item") == len(truth)  # no duplicate
    assert silver == truth
    assert fact == truth
    total = sum((line[4] for line in truth.values()), Decimal(0))
    assert scalar(db_url, "select sum(amount) from silver.sales_product") == total
    assert scalar(db_url, "select sum(item_amount) from gold.sales_item") == total
    mart = {(row[0], row[1]): tuple(row[2:]) for row in query(db_url, MART)}
    expected = mart_of(truth)
    assert set(mart) - set(expected) == set(), "customer-days without a sale left in the mart"
    assert set(expected) - set(mart) == set(), "customer-days missing from the mart"
    assert mart == expected


def gold_checksums(db_url: str) -> dict[str, tuple[Any, ...]]:
    return {table: query(db_url, TABLE_CHECKSUM.format(sql.Identifier(table)))[0] for table in GOLD_TABLES}


# -- the CLI ----------------------------------------------------------------------------------


def env_for(db_url: str, data_dir: Path, api_url: str, **settings: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")},
        **python_path(),
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": api_url,
        "RETAIL_API_KEY": API_KEY,
        "RETAIL_DATA_DIR": str(data_dir),
        **settings,
    }


def cli_json(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = run_cli([*args, "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def steps(run: dict[str, Any]) -> dict[str, str]:
    return {step["step"]: step["status"] for step in run["steps"]}


def sales_of(extracted: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in extracted["entities"] if e["entity"] == "sales")


def bronze_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "bronze").glob("sales_*/dt=*/*.ndjson"))


def admin(api_url: str, endpoint: str, **params: int) -> dict[str, Any]:
    response = httpx.post(f"{api_url}/_admin/{endpoint}", params=params, headers={"Authorization": API_KEY})
    assert response.status_code == 200, response.text
    return response.json()


def verify_exit(env: dict[str, str]) -> int:
    return run_cli(["verify"], env=env).returncode


# -- tests ------------------------------------------------------------------------------------

CORRECTED = DataConfig(sales=600, customers=40, products=60)


@pytest.mark.xdist_group("corrected")
def test_corrections_inside_the_lookback_reach_every_layer_then_an_idle_run_changes_nothing(
    start_mock: Any, copy_built: Any
) -> None:
    built = copy_built(CORRECTED)  # a first run-all (the default lookback, 5000 ids: every sale)
    db_url, data_dir = built.db_url, built.data_dir
    api = start_mock(**vars(CORRECTED))  # the same source, this test's own to correct
    truth = RetailData(CORRECTED)
    env = env_for(db_url, data_dir, api.url)
    assert_layers_equal_truth(db_url, truth_lines(truth))

    corrected = admin(api.url, "corrections", count=12, window=300)["corrected"]
    truth.correct(12, 300)
    assert {c["kind"] for c in corrected} == {"customer", "day", "line_removed", "quantity"}
    files_before = bronze_files(data_dir)
    run = cli_json(["run-all"], env)
    assert steps(run) == {"extract": "success", "load": "success", "transform": "success", "test": "success"}
    assert_layers_equal_truth(db_url, truth_lines(truth))
    assert verify_exit(env) == 0
    # only the corrected sales were written again; the others were re-read and skipped
    written = set(bronze_files(data_dir)) - set(files_before)
    rewritten = {
        row["id"]
        for path in written
        if "sales_customer" in str(path)
        for row in map(json.loads, path.read_text().splitlines())
    }
    assert rewritten == {c["id"] for c in corrected}
    removed = [c["id"] for c in corrected if c["kind"] == "line_removed"]
    moved = [c["id"] for c in corrected if c["kind"] in ("customer", "day")]
    logged = query(db_url, "select distinct sale_id from silver.sales_changes order by 1")
    assert [row[0] for row in logged] == sorted([*removed, *moved])

    # nothing new: no bronze file, no _loaded_at change, dbt skipped, Gold untouched
    gold = gold_checksums(db_url)
    loaded_at = scalar(db_url, "select max(_loaded_at) from silver.sales_product")
    files = bronze_files(data_dir)
    idle = cli_json(["run-all"], env)
    assert steps(idle) == {"extract": "success", "load": "success", "transform": "skipped", "test": "skipped"}
    assert bronze_files(data_dir) == files
    assert gold_checksums(db_url) == gold
    assert scalar(db_url, "select max(_loaded_at) from silver.sales_product") == loaded_at
    extracted = cli_json(["extract", "--entity", "sales"], env)
    assert (sales_of(extracted)["records"], sales_of(extracted)["unchanged"]) == (0, 600)
    assert bronze_files(data_dir) == files


def test_corrections_older_than_the_lookback_need_a_backfill(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    api = start_mock(**vars(CORRECTED))
    truth = RetailData(CORRECTED)
    env = env_for(db_url, data_dir, api.url, RETAIL_SALES_LOOKBACK="100")
    cli_json(["run-all"], env)
    before = truth_lines(truth)
    corrected = {c["id"] for c in admin(api.url, "corrections", count=16)["corrected"]}
    truth.correct(16)
    after = truth_lines(truth)
    old = {sale_id for sale_id in corrected if sale_id <= 500}  # the cursor is 601: window 501-600
    assert old and corrected - old

    cli_json(["run-all"], env)
    silver = keyed(query(db_url, SILVER_LINES))
    seen = {key: value for key, value in after.items() if key[0] not in old}
    unseen = {key: value for key, value in before.items() if key[0] in old}
    assert silver == {**seen, **unseen}  # the window's corrections only

    extracted = cli_json(["extract", "--entity", "sales", "--from-id", "1", "--to-id", "500"], env)
    sales = sales_of(extracted)
    # below the window no hash is kept: all 500 are written, and load updates only what differs
    assert (sales["records"], sales["unchanged"]) == (500, 0)
    assert (
        sales["cursor_to"] == 501
        and scalar(  # the cursor never moves back
            db_url, "select last_sales_id from meta.ingestion_state"
        )
        == 601
    )
    run = cli_json(["run-all"], env)
    load = next(step for step in run["steps"] if step["step"] == "load")["counts"]
    changed_lines = {
        key
        for key in after  # product, quantity or amount; not the header's move
        if key[0] in old and key in before and after[key][2:] != before[key][2:]
    }
    assert load["sales_product"]["updated"] == len(changed_lines)
    assert_layers_equal_truth(db_url, after)
    assert verify_exit(env) == 0


@pytest.mark.xdist_group("corrected")
def test_delisted_then_relisted_customers_and_products(start_mock: Any, copy_built: Any) -> None:
    built = copy_built(CORRECTED)  # after a first run-all
    db_url, data_dir = built.db_url, built.data_dir
    api = start_mock(**vars(CORRECTED))  # the same source, this test's own to delist from
    env = env_for(db_url, data_dir, api.url)
    fact = scalar_row(db_url, FACT_VALUES)
    delisted = admin(api.url, "delist", products=2, customers=1)
    run = cli_json(["run-all"], env)
    assert steps(run)["transform"] == "success"
    assert deleted_keys(db_url) == (
        sorted(delisted["delisted_customers"]),
        sorted(delisted["delisted_products"]),
    )
    assert dim_deleted(db_url) == deleted_keys(db_url)
    assert scalar_row(db_url, FACT_VALUES) == fact

    admin(api.url, "delist", products=0, customers=0)
    cli_json(["run-all"], env)
    assert deleted_keys(db_url) == ([], []) and dim_deleted(db_url) == ([], [])
    assert scalar_row(db_url, FACT_VALUES) == fact
    assert (
        scalar(
            db_url,
            "select count(*) from gold.customers_snapshot where customer_id = %s",
            (delisted["delisted_customers"][0],),
        )
        == 3
    )  # listed, delisted, relisted
    assert verify_exit(env) == 0


def test_a_snapshot_stopped_on_a_repeated_page_marks_nothing_deleted(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    config = DataConfig(sales=50, customers=40, products=30)
    api = start_mock(**vars(config))
    cli_json(["extract"], env_for(db_url, data_dir, api.url))
    cli_json(["load"], env_for(db_url, data_dir, api.url))
    with ScriptedApi(lambda request: None, config, honour_offset=False) as ignoring_offset:
        env = env_for(db_url, data_dir, ignoring_offset.url, RETAIL_PAGE_SIZE="10")
        extracted = cli_json(["extract", "--entity", "customers", "--entity", "products"], env)
    assert [len(e["files"]) for e in extracted["entities"]] == [1, 1]  # 10 of 40, 10 of 30
    assert query(
        db_url, "select entity, complete, records from meta.snapshot_files order by entity, complete"
    ) == [("customers", False, 10), ("customers", True, 40), ("products", False, 10), ("products", True, 30)]
    loaded = cli_json(["load"], env)
    assert loaded["tables"]["customers"]["deleted"] == 0
    assert deleted_keys(db_url) == ([], [])


def test_run_all_killed_while_loading_corrections_then_one_clean_run_equals_an_uninterrupted_one(
    start_mock: Any, db_url: str, reference_db_url: str, data_dir: Path, tmp_path: Path
) -> None:
    # 6,000 sales re-read every run: what a kill may interrupt is the load of one round's
    # corrections, whatever the history's size
    config = DataConfig(sales=6_000, customers=300, products=100)
    killed_api, reference_api = start_mock(**vars(config)), start_mock(**vars(config))
    env = env_for(db_url, data_dir, killed_api.url, RETAIL_PAGE_SIZE="1000")
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference_env = env_for(
        reference_db_url,
        reference_dir,
        reference_api.url,
        RETAIL_PAGE_SIZE="1000",
        RETAIL_SALES_LOOKBACK="6000",
    )
    env["RETAIL_SALES_LOOKBACK"] = "6000"  # every sale re-read: corrections all over history
    cli_json(["run-all"], env)
    cli_json(["run-all"], reference_env)
    rng = random.Random(12)
    kills = 0
    for round_number in range(4):
        admin(killed_api.url, "corrections", count=400)
        admin(reference_api.url, "corrections", count=400)
        process = subprocess.Popen(
            [*RETAILCTL, "run-all"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if wait_for_load(db_url, process):
            time.sleep(rng.uniform(0, 0.3))  # a random instant inside the load (or just after)
            kills += process.poll() is None
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=120)
        assert round_number < 3 or kills >= 2
    cli_json(["run-all"], env)
    cli_json(["run-all"], reference_env)
    assert query(db_url, FACT_ROWS) == query(reference_db_url, FACT_ROWS)
    assert query(db_url, MART_ROWS) == query(reference_db_url, MART_ROWS)
    truth = RetailData(config)
    for _ in range(4):
        truth.correct(400)
    assert_layers_equal_truth(db_url, truth_lines(truth))


# -- helpers of the tests above --------------------------------------------------------------


def scalar_row(db_url: str, statement: str) -> tuple[Any, ...]:
    return query(db_url, statement)[0]


def deleted_keys(db_url: str) -> tuple[list[str], list[str]]:
    customers = query(
        db_url, "select customer_id from silver.customers where _deleted_at is not null order by 1"
    )
    products = query(
        db_url, "select product_sku from silver.products where _deleted_at is not null order by 1"
    )
    return [row[0] for row in customers], [row[0] for row in products]


def dim_deleted(db_url: str) -> tuple[list[str], list[str]]:
    customers = query(db_url, "select customer_id from gold.dim_customer where is_deleted order by 1")
    products = query(db_url, "select product_id from gold.dim_product where is_deleted order by 1")
    return [row[0] for row in customers], [row[0] for row in products]


def wait_for_load(db_url: str, process: subprocess.Popen[Any], timeout: float = 60) -> bool:
    """Poll until the run's load connection is in pg_stat_activity (True) or the run has ended
    before one showed (False)."""
    name = f"retailctl pid={process.pid} load"
    with psycopg.connect(db_url, autocommit=True) as conn:

        def state() -> str | None:
            if conn.execute("select 1 from pg_stat_activity where application_name = %s", (name,)).fetchone():
                return "loading"
            return "ended" if process.poll() is not None else None

        return wait_until(state, timeout, "the run's load to start or the run to end") == "loading"


def test_a_cursor_set_back_by_hand_writes_those_sales_again(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    api = start_mock(sales=300, customers=20, products=20)
    env = env_for(db_url, data_dir, api.url)
    assert sales_of(cli_json(["extract", "--entity", "sales"], env))["records"] == 300
    assert run_cli(["state", "set", "--next-sales-id", "101"], env=env).returncode == 0
    again = sales_of(cli_json(["extract", "--entity", "sales"], env))
    # ids 1-100 (the window before the cursor) unchanged; 101-300 asked for again: written
    assert (again["records"], again["unchanged"], again["cursor_to"]) == (200, 100, 301)
    assert scalar(db_url, "select count(*) from meta.sale_hashes") == 300


@pytest.mark.slow  # four runs of dbt
def test_the_hourly_build_analyzes_the_fact_only_when_autoanalyze_would(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    """The fact's post-hook (macros/analyze_if_stale.sql): a new table, or over 50 rows + 10 %
    changed since its last ANALYZE, not every hour."""
    api = start_mock(sales=3_000, customers=20, products=20)

    def run_all(sales: int) -> int:
        env = env_for(
            db_url, data_dir, api.url, RETAIL_SALES_LOOKBACK="0", RETAIL_MAX_SALES_PER_RUN=str(sales)
        )
        result = run_cli(["run-all"], env=env)
        assert result.returncode == 0, result.stderr
        return int(
            scalar(
                db_url,
                "select analyze_count from pg_stat_user_tables where relid = 'gold.sales_item'::regclass",
            )
        )

    first = run_all(2_000)  # the table dbt created: never analyzed
    assert first >= 1
    settled = run_all(10)  # the first build's counts may reach the statistics late
    assert run_all(10) == settled  # ~30 lines written since, under 50 + 10 % of ~6,000
    # the post-hook sees what earlier runs wrote (the statistics counters lag the transaction):
    # ~1,500 lines are over the threshold at the next run
    assert run_all(500) == settled
    assert run_all(10) == settled + 1


@pytest.mark.slow  # 300 pages
def test_a_long_extract_keeps_only_the_window_s_hashes_and_vacuums_the_rest(
    start_mock: Any, db_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """meta.sale_hashes is a queue: without the bounded prune and the vacuum (autovacuum may be
    off) every sale a backfill read stays in it as a dead row, and extract slowed down as they
    piled up (37k sales/s falling to 21k within 3M sales, measured)."""
    monkeypatch.setattr(extract_sales, "VACUUM_AFTER_PRUNED", 2_000)
    api = start_mock(sales=30_000, customers=20, products=20)
    settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="100", RETAIL_SALES_LOOKBACK="1000")
    [sales] = extract(settings, entities=["sales"])
    assert (sales.records, sales.cursor_to) == (30_000, 30_001)
    window = query(db_url, "select count(*), min(sale_id), max(sale_id) from meta.sale_hashes")[0]
    assert window == (1_000, 29_001, 30_000)
    # 30,000 rows of ~70 bytes take ~280 pages (2.3 MB) unvacuumed; the vacuums every 2,000
    # pruned rows let the inserts reuse the space: a few chunks' worth stay
    assert scalar(db_url, "select pg_relation_size('meta.sale_hashes')") < 1_000_000


def test_extract_tells_of_new_sales_from_the_first_page_and_an_idle_run_never(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    """run-all starts importing dbt when `new_sales` is first called: on the first page when
    the source holds sales past the cursor (even if they come last, after the lookback's
    re-read pages), and never in a run that finds nothing new (it would slow an idle hour)."""
    api = start_mock(sales=1_000, customers=20, products=20)

    def pages_at_first_call(**env: str) -> int | None:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="100", **env)
        pages_read: list[int] = [0]
        told: list[int] = []
        extract(
            settings,
            entities=["sales"],
            progress=lambda entity, records, pages, total: pages_read.append(pages),
            new_sales=lambda: told.append(pages_read[-1]),
        )
        return told[0] if told else None

    assert pages_at_first_call(RETAIL_MAX_SALES_PER_RUN="600") == 0  # from empty
    assert pages_at_first_call(RETAIL_SALES_LOOKBACK="300") == 0  # 400 new, after 3 re-read pages
    assert pages_at_first_call(RETAIL_SALES_LOOKBACK="300") is None  # idle


def test_the_sales_cap_counts_new_sales_only_so_the_lookback_never_freezes_the_cursor(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    api = start_mock(sales=1_000, customers=20, products=20)
    env = env_for(db_url, data_dir, api.url, RETAIL_MAX_SALES_PER_RUN="300")
    for expected_cursor in (301, 601, 901, 1_001):
        sales = sales_of(cli_json(["extract", "--entity", "sales"], env))
        assert (sales["records"], sales["cursor_to"]) == (
            min(300, 1_001 - sales["cursor_from"]),
            expected_cursor,
        )


def test_corrections_and_new_sales_read_together_go_to_separate_files_and_touch_nothing_else(
    start_mock: Any, db_url: str, data_dir: Path
) -> None:
    """A file of new sales starts past silver's highest key, so load COPYs it straight in
    (the re-read corrections go to a file of their own, which load upserts); unchanged
    re-read sales are neither written to bronze nor touched in silver."""
    config = DataConfig(sales=800, customers=40, products=60)
    api = start_mock(**vars(config))
    truth = RetailData(config)
    first = cli_json(["run-all"], env_for(db_url, data_dir, api.url, RETAIL_MAX_SALES_PER_RUN="600"))
    assert first["status"] == "success"
    corrected = {
        c["id"] for c in admin(api.url, "corrections", count=12, window=300, before=601)["corrected"]
    }
    truth.correct(12, 300, end=600)
    assert len(corrected) == 12 and all(301 <= sale_id <= 600 for sale_id in corrected)
    files_before = set(bronze_files(data_dir))
    loaded_at = scalar(db_url, "select max(_loaded_at) from silver.sales_product")

    run = cli_json(["run-all"], env_for(db_url, data_dir, api.url))  # one page holds both kinds
    assert steps(run) == {"extract": "success", "load": "success", "transform": "success", "test": "success"}
    assert_layers_equal_truth(db_url, truth_lines(truth))
    written = sorted(
        sorted(row["id"] for row in map(json.loads, path.read_text().splitlines()))
        for path in set(bronze_files(data_dir)) - files_before
        if "sales_customer" in str(path)
    )
    assert written == [sorted(corrected), list(range(601, 801))]
    touched = query(
        db_url,
        "select id from silver.sales_customer where _loaded_at > %s "
        "union select sale_id from silver.sales_product where _loaded_at > %s",
        (loaded_at, loaded_at),
    )
    assert {row[0] for row in touched} - set(range(601, 801)) <= corrected


def test_an_older_version_of_a_sale_removes_no_line_and_a_newer_one_logs_its_old_pair(
    data_dir: Path, db_url: str
) -> None:
    now = datetime.now(UTC)

    def sale(sale_id: int, customer: str, moment: str, amounts: list[float], at: datetime) -> None:
        write_bronze(
            data_dir,
            "sales_customer",
            [{"id": sale_id, "datetime": moment, "total_amount": sum(amounts), "customer_id": customer}],
            at,
        )
        write_bronze(
            data_dir,
            "sales_product",
            [
                {"sale_id": sale_id, "line_no": n, "product_sku": "SKU-1", "quantity": 1, "amount": amount}
                for n, amount in enumerate(amounts, start=1)
            ],
            at + timedelta(seconds=1),
        )  # loaded after its header, as extract's one batch is
        load(data_dir, db_url)

    sale(7, "C1", "2026-01-02T23:30:00+00:00", [1.0, 2.0, 3.0], now - timedelta(hours=1))
    sale(7, "C1", "2026-01-02T23:30:00+00:00", [1.0], now - timedelta(hours=2))  # older: ignored
    assert scalar(db_url, "select count(*) from silver.sales_product") == 3
    assert scalar(db_url, "select count(*) from silver.sales_changes") == 0
    # newer: moved to C2 on the next day (its old pair logged), then a line removed (the pair
    # the sale is on by then logged)
    sale(7, "C2", "2026-01-03T00:30:00+00:00", [1.0, 2.5], now)
    assert query(db_url, "select line_no, amount from silver.sales_product order by 1") == [
        (1, Decimal("1.0")),
        (2, Decimal("2.5")),
    ]
    assert query(db_url, "select sale_id, customer_id, day from silver.sales_changes order by 2") == [
        (7, "C1", date(2026, 1, 2)),
        (7, "C2", date(2026, 1, 3)),
    ]


# -- the lookback window, requested together (issue 14) ------------------------------------------


def written_sale_ids(data_dir: Path, before: list[Path]) -> list[int]:
    """The ids of the sales (headers) in the bronze files written since `before`, sorted."""
    return sorted(
        row["id"]
        for path in set(bronze_files(data_dir)) - set(before)
        if "sales_customer" in str(path)
        for row in map(json.loads, path.read_text().splitlines())
    )


class InFlight:
    """A ScriptedApi script that holds each watched /sales request until `wanted` are in flight
    at once (or `timeout_s` passed), and records the most seen: a client paging one request at
    a time never gets past one."""

    def __init__(self, wanted: int, timeout_s: float = 5) -> None:
        self.wanted, self.timeout_s = wanted, timeout_s
        self.watching = False
        self.now = self.most = 0
        self.changed = threading.Condition()

    def __call__(self, request: Request) -> Reply | None:
        if request.path != "/sales" or not self.watching:
            return None
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most >= self.wanted, timeout=self.timeout_s)
            self.now -= 1
        return None


def test_the_lookback_window_s_pages_are_requested_together_and_read_what_paging_one_by_one_reads(
    db_url: str, data_dir: Path
) -> None:
    """An hour's lookback pages are requested WINDOW_REQUESTS at a time (an idle hour against a
    source 50 ms away: 0.94 s -> 0.65 s): the corrected sales among them, and only those, are
    written again, with ids that have gaps, and the new sales after the cursor follow."""
    config = DataConfig(sales=1_000, customers=20, products=20, gap_every=70)
    in_flight = InFlight(extract_sales.WINDOW_REQUESTS)
    with ScriptedApi(in_flight, config) as api:
        env = {"RETAIL_PAGE_SIZE": "50", "RETAIL_SALES_LOOKBACK": "400"}
        settings = settings_for(data_dir, db_url, api.url, RETAIL_MAX_SALES_PER_RUN="800", **env)
        [first] = extract(settings, entities=["sales"])
        cursor = api.data.sale_id(799) + 1
        assert (first.records, first.cursor_to) == (800, cursor)
        corrected = sorted(c.sale_id for c in api.data.correct(9, 300, end=800))
        window = [api.data.sale_id(k) for k in range(800) if api.data.sale_id(k) >= cursor - 400]
        files = bronze_files(data_dir)
        in_flight.watching = True
        [second] = extract(settings_for(data_dir, db_url, api.url, **env), entities=["sales"])
    new = [api.data.sale_id(k) for k in range(800, 1_000)]
    assert in_flight.most == extract_sales.WINDOW_REQUESTS > 1
    assert len(corrected) == 9 and set(corrected) <= set(window)
    assert (second.records, second.unchanged, second.cursor_to) == (9 + 200, len(window) - 9, new[-1] + 1)
    assert written_sale_ids(data_dir, files) == corrected + new
    assert second.warnings == [] and second.rejected == 0


def test_a_limit_refused_mid_window_is_lowered_and_each_page_s_slice_is_still_read_whole(
    db_url: str, data_dir: Path
) -> None:
    """A source that refuses the window's page size (422 above 250, as the original API does)
    teaches the client the lower one while the window's requests are in flight: each is asked
    again for 250 sales, a quarter of its slice, and the slice is read on from its last id.
    The lowered limit is told once, however many requests learnt it."""
    config = DataConfig(sales=3_000, customers=20, products=20, gap_every=70)
    refusing = threading.Event()
    held = InFlight(3)  # the window's two pages and the cursor's, refused all at once

    def refuse_above_250(request: Request) -> Reply | None:
        if refusing.is_set() and request.params.get("limit", 0) > 250:
            held(request)
            return Reply(status=422, body=b'{"detail": "limit must be <= 250"}')
        return None

    with ScriptedApi(refuse_above_250, config) as api:
        env = {"RETAIL_PAGE_SIZE": "1000", "RETAIL_SALES_LOOKBACK": "2000"}
        settings = settings_for(data_dir, db_url, api.url, **env)
        [first] = extract(settings, entities=["sales"])
        cursor = first.cursor_to
        corrected = sorted(c.sale_id for c in api.data.correct(6, 1_500))
        window = [k for k in range(3_000) if api.data.sale_id(k) >= cursor - 2_000]
        files = bronze_files(data_dir)
        refusing.set()
        held.watching = True
        warnings: list[str] = []
        [again] = extract(settings, entities=["sales"], warn=warnings.append)
    assert again.error is None and again.cursor_to == cursor
    assert (again.records, again.unchanged) == (6, len(window) - 6)
    assert written_sale_ids(data_dir, files) == corrected
    assert warnings == ["GET /sales refused limit=1000; using the original API's maximum of 250"]
    assert held.most == 3  # three requests learnt the lower limit at once: told once


def test_a_window_page_that_does_not_advance_stops_the_run_and_loses_nothing(
    db_url: str, data_dir: Path
) -> None:
    """A source ignoring start_sales_id in the window (always its first page): paging stops
    with the same warning as one page at a time, the cursor stays, and the next good run reads
    the new sales."""
    config = DataConfig(sales=600, customers=20, products=20)
    ignoring = threading.Event()

    def ignore_start(request: Request) -> Reply | None:
        if ignoring.is_set() and request.path == "/sales":
            items = [api.data.sale(k) for k in range(request.params["limit"])]
            return Reply(body=orjson.dumps({"items": items, "total_items": 600}))
        return None

    with ScriptedApi(ignore_start, config) as api:
        env = {"RETAIL_PAGE_SIZE": "100", "RETAIL_SALES_LOOKBACK": "300"}
        settings = settings_for(data_dir, db_url, api.url, RETAIL_MAX_SALES_PER_RUN="500", **env)
        extract(settings, entities=["sales"])
        ignoring.set()
        [stopped] = extract(settings_for(data_dir, db_url, api.url, **env), entities=["sales"])
        ignoring.clear()
        [after] = extract(settings_for(data_dir, db_url, api.url, **env), entities=["sales"])
    assert stopped.warnings == [
        "/sales?start_sales_id=201 returned no sale at or after that id; "
        "paging does not advance, stopping there"
    ]
    assert (stopped.records, stopped.cursor_to) == (0, 501)
    assert (after.records, after.unchanged, after.cursor_to) == (100, 300, 601)
