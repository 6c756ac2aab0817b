"""Gold and the whole pipeline: real HTTP, real Postgres, real dbt, the real CLI."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mock_api import DataConfig, FaultConfig, RetailData
from retailctl.extract import records
from retailctl.store.lock import LOCK_NAMESPACE, PIPELINE_LOCK_ID
from tests.helpers import SMALL_RUN, cli_resource_dir, run_cli, wait_until
from tests.helpers.scripted_api import Gate, Reply, Request, ScriptedApi

pytestmark = pytest.mark.slow  # every test here runs the whole pipeline, dbt included

FACT_COLUMNS = (
    "sales_item_id, sale_id, line_no, sales_datetime, day, customer_id, product_sku, "
    "product_description, item_quantity, item_amount, unit_amount, discount_perc"
)
MART_COLUMNS = "customer_id, day, n_sales, n_items, total_units, total_revenue, avg_discount"


def ground_truth(config: DataConfig) -> tuple[int, Decimal, dict[tuple[str, Any], tuple[int, int, Decimal]]]:
    """Lines, amount and per-(customer, UTC day) figures of the valid sales, from the generator."""
    data = RetailData(config)
    lines, amount = 0, Decimal(0)
    pairs: dict[tuple[str, Any], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    for k in range(config.sales):
        sale = data.sale(k)
        if records.sale_reject_reason(sale):
            continue
        day = datetime.fromisoformat(sale["datetime"]).astimezone(UTC).date()
        figures = pairs[sale["customer_id"], day]
        figures[0] += 1
        for item in sale["items"]:
            lines += 1
            amount += records.decimal_of(item["amount"])
            figures[1] += item["quantity"]
            figures[2] += records.decimal_of(item["amount"])
    return lines, amount, {key: tuple(value) for key, value in pairs.items()}  # type: ignore[misc]


def gold_figures(db_url: str) -> tuple[int, Decimal, dict[tuple[str, Any], tuple[int, int, Decimal]]]:
    with psycopg.connect(db_url) as conn:
        lines, amount = conn.execute("select count(*), sum(item_amount) from gold.sales_item").fetchone()  # type: ignore[misc]
        mart = conn.execute(
            "select customer_id, day, n_sales, total_units, total_revenue from gold.mart_sales_by_customer"
        ).fetchall()
    return lines, amount, {(c, d): (n, u, r) for c, d, n, u, r in mart}


def rows(db_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def run_all(env: dict[str, str], api_url: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(["run-all"], env={**env, "RETAIL_API_URL": api_url})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_end_to_end_gold_equals_the_sources_ground_truth(
    start_mock, cli_env: dict[str, str], db_url: str
) -> None:
    config = DataConfig(sales=3_000, invalid_rate=0.02)
    server = start_mock(sales=3_000, invalid_rate=0.02)
    output = run_all(cli_env, server.url).stdout
    assert output.splitlines()[-1].startswith("run ") and "succeeded" in output

    lines, amount, pairs = ground_truth(config)
    assert gold_figures(db_url) == (lines, amount, pairs)
    rejected = rows(db_url, "select count(*) from meta.extract_log where entity = 'sales' and rejected > 0")
    assert rejected == [(1,)]
    bad_ids = [
        RetailData(config).sale(k).get("id")
        for k in range(3_000)
        if records.sale_reject_reason(RetailData(config).sale(k))
    ]
    assert bad_ids and rows(
        db_url, f"select count(*) from gold.sales_item where sale_id in ({','.join(map(str, bad_ids))})"
    ) == [(0,)]
    history = rows(db_url, "select status, trigger, jsonb_array_length(steps) from meta.pipeline_runs")
    assert history == [("success", "cli", 4)]


def test_second_run_is_incremental_and_third_changes_nothing(
    start_mock, cli_env: dict[str, str], db_url: str
) -> None:
    run_all(cli_env, start_mock(sales=2_000).url)
    first_write = rows(db_url, "select max(_updated_at) from gold.sales_item")[0][0]

    grown = DataConfig(sales=2_600)  # 600 more sales; some are backdated onto old days
    run_all(cli_env, start_mock(sales=2_600).url)
    touched = rows(db_url, f"select count(*) from gold.sales_item where _updated_at > '{first_write}'")
    new_lines = sum(len(RetailData(grown).sale(k)["items"]) for k in range(2_000, 2_600))
    assert touched == [(new_lines,)]  # only the new rows were written
    assert gold_figures(db_url) == ground_truth(grown)

    fact = rows(db_url, f"select {FACT_COLUMNS}, _updated_at from gold.sales_item order by 1")
    mart = rows(db_url, f"select {MART_COLUMNS}, _updated_at from gold.mart_sales_by_customer order by 1, 2")
    third = run_all(cli_env, start_mock(sales=2_600).url)
    assert "transform: skipped, nothing new in silver since the last build" in third.stdout
    transform = run_cli(["transform"], env={**cli_env})  # forced: still writes nothing
    assert "model sales_item: success" in transform.stdout and ", 0 rows" in transform.stdout
    assert rows(db_url, f"select {FACT_COLUMNS}, _updated_at from gold.sales_item order by 1") == fact
    assert (
        rows(db_url, f"select {MART_COLUMNS}, _updated_at from gold.mart_sales_by_customer order by 1, 2")
        == mart
    )


def test_late_product_and_changed_email(start_mock, cli_env: dict[str, str], db_url: str) -> None:
    run_all(cli_env, start_mock(sales=1_500, hidden_products=3).url)
    inferred = rows(db_url, "select product_id from gold.dim_product where is_inferred order by 1")
    assert inferred == [("SKU-00198",), ("SKU-00199",), ("SKU-00200",)]
    assert (
        rows(
            db_url,
            "select count(*) from gold.sales_item where product_sku = 'SKU-00200' "
            "and unit_amount is null and product_description is null",
        )[0][0]
        > 0
    )
    old_email = rows(db_url, "select primary_email from gold.dim_customer where customer_id = 'C000011'")

    run_all(cli_env, start_mock(sales=1_500, customer_version=1).url)  # the product turns up
    assert rows(db_url, "select count(*) from gold.dim_product where is_inferred") == [(0,)]
    assert rows(db_url, "select count(*) from gold.sales_item where unit_amount is null") == [(0,)]
    assert rows(
        db_url, "select description is not null from gold.dim_product where product_id = 'SKU-00200'"
    ) == [(True,)]
    assert rows(db_url, "select primary_email from gold.dim_customer where customer_id = 'C000011'") == [
        ("chloe.11.v1@example.com",)
    ]
    history = rows(
        db_url,
        "select emails[1], dbt_valid_to is null from gold.customers_snapshot "
        "where customer_id = 'C000011' order by dbt_valid_from",
    )
    assert history == [(old_email[0][0], False), ("chloe.11.v1@example.com", True)]


def pipeline_lock_held(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(  # advisory locks are per database; others on this server are not ours
            "select count(*) from pg_locks where locktype = 'advisory' and classid = %s and objid = %s "
            "and granted and database = (select oid from pg_database where datname = current_database())",
            (LOCK_NAMESPACE, PIPELINE_LOCK_ID),
        ).fetchone()
    return row is not None and row[0] == 1


def test_two_runs_at_once_one_exits_75(cli_env: dict[str, str], db_url: str, spawn, gate: Gate) -> None:
    def hold_the_first_sales_page(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number == 1:
            gate.hold()  # the first run, mid-extract, holding the lock until the second is done
        return None

    with ScriptedApi(hold_the_first_sales_page, DataConfig(sales=3_000)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100"}
        first = spawn(["run-all"], env, output=True)
        wait_until(
            lambda: gate.held.is_set() and pipeline_lock_held(db_url),
            60,
            "the first run to hold the lock, mid-extract",
            alive=first,
        )
        started = time.monotonic()
        second = run_cli(["run-all"], env=env)
        waited = time.monotonic() - started
        first_still_running = first.poll() is None
        gate.open()
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 75
    assert re.fullmatch(
        r"error: another retailctl run holds the lock: run-all run [0-9a-f-]{36} "
        rf"\(pid {first.pid}, since [0-9-]+ [0-9:]+ UTC\); try again later\n",
        second.stderr,
    ), second.stderr
    assert first_still_running  # refused while the lock was held, not after it was released
    assert waited < 5  # start-up included; the lock itself is tried once, not waited for


def silver_sales(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("select count(*) from silver.sales_customer").fetchone()[0]  # type: ignore[index]


@pytest.mark.parametrize("then", ["source resumes", "SIGKILL"])
def test_run_all_loads_each_chunk_while_extract_reads_the_next(
    then: str, cli_env: dict[str, str], db_url: str, spawn, gate: Gate
) -> None:
    """Extract and load overlap: with the source stalled on page 20 (of 30, 8 pages a chunk),
    the first two chunks are already in silver. Killed there, the rerun's result equals an
    uninterrupted run's."""
    config = DataConfig(sales=3_000)
    data = RetailData(config)
    valid = [not records.sale_reject_reason(data.sale(k)) for k in range(config.sales)]

    def stall_page_20(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number == 20:
            gate.hold(timeout=300)
        return None

    with ScriptedApi(stall_page_20, config) as api:
        # the stalled page must stay unanswered (no time-out and retry) while the test looks
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100", "RETAIL_HTTP_TIMEOUT": "300"}
        run = spawn(["run-all", "--json"], env, output=True)
        wait_until(
            lambda: api.counts.get("/sales") == 20 and silver_sales(db_url) == sum(valid[:1_600]),
            60,
            "chunks 1 and 2 (the first 1,600 sales) loaded while extract waits for page 20",
            alive=run,
        )
        if then == "SIGKILL":
            run.kill()
            run.communicate(timeout=30)
            gate.open()
            run = spawn(["run-all", "--json"], env, output=True)
        else:
            gate.open()
        stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    steps = {step["step"]: step["status"] for step in json.loads(stdout)["steps"]}
    assert steps == {"extract": "success", "load": "success", "transform": "success", "test": "success"}
    assert silver_sales(db_url) == sum(valid)
    assert gold_figures(db_url) == ground_truth(config)


@pytest.mark.xdist_group("small_run")
def test_a_forced_duplicate_in_the_fact_fails_retailctl_test_with_exit_3(copy_built) -> None:
    built = copy_built(SMALL_RUN)  # after its run-all
    cli_env, db_url = built.env, built.db_url
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into gold.sales_item select * from gold.sales_item where sale_id = 7 and line_no = 1"
        )
    result = run_cli(["test"], env=cli_env)
    assert result.returncode == 3
    assert "test unique_sales_item_sales_item_id: fail" in result.stdout
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: 3 dbt test(s) failed: ")
    assert "unique_sales_item_sales_item_id: 1 failing row(s)" in error
    assert "reconcile_sales_item_with_silver: 1 failing row(s)" in error


def runs(db_url: str) -> dict[str, tuple[str, int]]:
    """Every run in the history: its status and how many steps it has recorded."""
    try:
        return {
            run_id: (status, steps)
            for run_id, status, steps in rows(
                db_url, "select run_id::text, status, jsonb_array_length(steps) from meta.pipeline_runs"
            )
        }
    except psycopg.errors.UndefinedTable:  # not migrated yet
        return {}


def sales_files(data_dir: Path) -> int:
    return len(list((data_dir / "bronze" / "sales_customer").rglob("*.ndjson")))


def started_and_recorded(db_url: str, earlier: set[str], steps: int) -> bool:
    """A run not among `earlier` is running and has recorded at least `steps` steps."""
    return any(
        status == "running" and recorded >= steps
        for run_id, (status, recorded) in runs(db_url).items()
        if run_id not in earlier
    )


def test_chaos_kills_then_one_clean_run_equal_an_uninterrupted_run(
    start_mock,
    cli_env: dict[str, str],
    data_dir: Path,
    db_url: str,
    reference_db_url: str,
    tmp_path: Path,
    spawn,
) -> None:
    chaotic = start_mock(
        sales=4_000, invalid_rate=0.01, faults=FaultConfig(fail_rate=0.1, throttle_rate=0.05, retry_after_s=0)
    )
    env = {**cli_env, "RETAIL_API_URL": chaotic.url, "RETAIL_PAGE_SIZE": "200", "RETAIL_HTTP_RETRIES": "15"}
    # A kill at each stage of a run: as it starts (snapshots), twice mid-sales (once a chunk of
    # 8 pages is durable: 1,600 sales), in load, as dbt starts. `before`: the runs and sales
    # files there were when the victim started.
    stages: list[tuple[str, Callable[[tuple[set[str], int]], bool]]] = [
        ("its run to start", lambda before: started_and_recorded(db_url, before[0], 0)),
        ("a new sales file", lambda before: sales_files(data_dir) > before[1]),
        ("another new sales file", lambda before: sales_files(data_dir) > before[1]),
        ("its load step", lambda before: started_and_recorded(db_url, before[0], 1)),
        ("its transform step", lambda before: started_and_recorded(db_url, before[0], 2)),
    ]
    for what, reached in stages:
        before = (set(runs(db_url)), sales_files(data_dir))
        victim = spawn(["run-all"], env)
        wait_until(lambda: reached(before), 120, what, alive=victim)  # noqa: B023
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    final = run_cli(["run-all"], env=env)
    assert final.returncode == 0, final.stderr

    calm = start_mock(sales=4_000, invalid_rate=0.01)  # the same data, no faults, no kills
    reference_env = {
        **cli_env,
        "RETAIL_DATABASE_URL": reference_db_url,
        "RETAIL_DATA_DIR": str(tmp_path / "reference"),
    }
    run_all(reference_env, calm.url)
    for query in (
        f"select {FACT_COLUMNS} from gold.sales_item order by 1",
        f"select {MART_COLUMNS} from gold.mart_sales_by_customer order by 1, 2",
        "select * from gold.dim_customer order by 1",
        "select * from gold.dim_product order by 1",
    ):
        assert rows(db_url, query) == rows(reference_db_url, query), query
    statuses = {status for (status,) in rows(db_url, "select status from meta.pipeline_runs")}
    assert statuses == {"success", "interrupted"}  # kills landed mid-run; the dead runs are marked


@pytest.mark.xdist_group("small_run")
def test_changed_only_tests_check_new_rows_and_full_tests_check_all(copy_built) -> None:
    built = copy_built(SMALL_RUN)  # after its run-all, whose tests passed and are remembered
    cli_env, db_url = built.env, built.db_url
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update gold.sales_item set item_quantity = 0 where sales_item_id = '5-1'")
    old_problem = run_cli(["test", "--changed"], env=cli_env)
    assert old_problem.returncode == 0, "rows written before the last passing test are not re-read"
    full = run_cli(["test"], env=cli_env)
    assert full.returncode == 3
    assert "at_least_sales_item_item_quantity__1: 1 failing row(s)" in full.stderr

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update gold.sales_item set item_quantity = 1 where sales_item_id = '5-1'")
        conn.execute(
            "update gold.sales_item set item_quantity = 0, _updated_at = now() where sales_item_id = '6-1'"
        )
    new_problem = run_cli(["test", "--changed"], env=cli_env)
    assert new_problem.returncode == 3
    assert (
        new_problem.stderr.splitlines()[-1]
        == "error: 1 dbt test(s) failed: at_least_sales_item_item_quantity__1: 1 failing row(s)"
    )


def run_all_json(env: dict[str, str], api_url: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(["run-all", "--json"], env={**env, "RETAIL_API_URL": api_url})
    return result.returncode, json.loads(result.stdout) if result.returncode == 0 else {}


def test_an_hourly_run_is_one_dbt_build_on_the_parsed_project_and_skips_an_unchanged_snapshot(
    start_mock, cli_env: dict[str, str], db_url: str, data_dir: Path
) -> None:
    run_all(cli_env, start_mock(sales=800).url)
    dbt_log = data_dir / "dbt" / "logs" / "dbt.log"
    before = dbt_log.stat().st_size

    code, run = run_all_json(cli_env, start_mock(sales=900).url)  # new sales, no customer changed
    assert code == 0
    transformed = next(step for step in run["steps"] if step["step"] == "transform")
    assert sorted(transformed["counts"]) == [
        "dim_customer",
        "dim_product",
        "mart_sales_by_customer",
        "sales_item",
    ]
    with dbt_log.open() as log:
        log.seek(before)
        hour = log.read()
    invocations = re.findall(r"running dbt with arguments .*'invocation_command': '([^']*)'", hour)
    # the build alone: this load wrote both sales tables, so source freshness could only pass
    assert len(invocations) == 1, invocations
    assert "Unable to do partial parsing" not in hour  # the hour's test window is no --vars
    assert hour.count("Partial parsing enabled, no changes found, skipping parsing") == 1
    assert gold_figures(db_url) == ground_truth(DataConfig(sales=900))

    code, run = run_all_json(cli_env, start_mock(sales=1_000, customer_version=1).url)
    assert code == 0
    transformed = next(step for step in run["steps"] if step["step"] == "transform")
    assert transformed["counts"]["customers_snapshot"] > 0  # every 10th customer's emails changed
    closed = "select count(*) from gold.customers_snapshot where dbt_valid_to is not null"
    assert rows(db_url, closed) == [(50,)]

    # customers changed again, no sale: dbt builds, and checks the sales' freshness itself
    result = run_cli(
        ["run-all"], env={**cli_env, "RETAIL_API_URL": start_mock(sales=1_000, customer_version=2).url}
    )
    assert result.returncode == 0, result.stderr
    assert "source sales_customer: pass" in result.stdout
    assert "source sales_product: pass" in result.stdout


def test_a_failing_test_in_the_hourly_build_skips_the_mart_then_the_next_run_catches_up(
    start_mock, cli_env: dict[str, str], db_url: str
) -> None:
    run_all(cli_env, start_mock(sales=800).url)
    with psycopg.connect(db_url, autocommit=True) as conn:  # a duplicate written "this hour"
        conn.execute(
            "insert into gold.sales_item select sales_item_id, sale_id, line_no, sales_datetime, day, "
            "customer_id, product_sku, product_description, item_quantity, item_amount, unit_amount, "
            "discount_perc, _source_loaded_at, now() from gold.sales_item where sales_item_id = '7-1'"
        )
        conn.execute("update gold.sales_item set _updated_at = now() where sales_item_id = '7-1'")
    failed = run_cli(["run-all"], env={**cli_env, "RETAIL_API_URL": start_mock(sales=900).url})
    assert failed.returncode == 3
    assert "model mart_sales_by_customer: skipped" in failed.stdout
    error = failed.stderr.splitlines()[-1]
    assert error.startswith("error: 3 dbt test(s) failed: ")
    for test in (
        "unique_sales_item_sales_item_id",
        "unique_combination_of_columns_sales_item_sale_id__line_no",
    ):
        assert f"{test}: 1 failing row(s)" in error
    assert "reconcile_sales_item_with_silver: 1 failing row(s)" in error
    assert re.search(r"failed at test .*tests: \d+ passed, 3 failed$", failed.stdout.splitlines()[-1])
    in_mart = "select (select sum(n_items) from gold.mart_sales_by_customer), count(*) from gold.sales_item"
    mart_lines, fact_lines = rows(db_url, in_mart)[0]
    assert mart_lines < fact_lines - 1  # the mart was not built on a failing fact: no new sale in it

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "delete from gold.sales_item where ctid = "
            "(select max(ctid) from gold.sales_item where sales_item_id = '7-1')"
        )
    run_all(cli_env, start_mock(sales=900).url)  # nothing new in silver, but Gold was not tested
    assert gold_figures(db_url) == ground_truth(DataConfig(sales=900))


def test_status_reports_cursor_runs_rows_and_rejects(start_mock, cli_env: dict[str, str]) -> None:
    run_all(cli_env, start_mock(sales=600, invalid_rate=0.05).url)
    report = json.loads(run_cli(["status", "--json"], env=cli_env).stdout)
    truth = [RetailData(DataConfig(sales=600, invalid_rate=0.05)).sale(k) for k in range(600)]
    rejected = sum(1 for sale in truth if records.sale_reject_reason(sale))
    valid_lines = sum(len(s["items"]) for s in truth if not records.sale_reject_reason(s))
    assert report["cursor"]["next_sales_id"] == 601
    assert report["lock_holder"] is None
    assert [(r["status"], r["trigger"]) for r in report["runs"]] == [("success", "cli")]
    assert report["silver_rows"]["sales_product"] == report["gold_rows"]["sales_item"] == valid_lines
    assert report["rejected_records"]["total"] >= rejected > 0
    plain = run_cli(["status"], env=cli_env).stdout.splitlines()
    assert plain[0].startswith("next sales id: 601 (last extract: ")
    assert plain[1] == "lock: free"
    assert f"gold rows\tsales_item\t{valid_lines}" in plain


@pytest.mark.xdist_group("small_run")
def test_docs_generate_writes_the_catalog_under_the_data_dir(copy_built) -> None:
    built = copy_built(SMALL_RUN)  # after its run-all
    cli_env, data_dir = built.env, built.data_dir
    result = run_cli(["docs"], env=cli_env)
    assert result.returncode == 0, result.stderr
    target = data_dir / "dbt" / "target"
    assert result.stdout.splitlines() == [f"dbt docs generated in {target}"]
    catalog = (target / "catalog.json").read_text()
    assert '"model.retail.sales_item"' in catalog and '"model.retail.mart_sales_by_customer"' in catalog
    project = cli_resource_dir("dbt", cli_env)  # the dbt project the CLI used: the installed one
    assert (project / "dbt_project.yml").exists()
    assert not (project / "target").exists() and not (project / "logs").exists()
