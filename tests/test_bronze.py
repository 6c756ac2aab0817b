"""`extract` against real HTTP (the mock and a scripted misbehaving API) and real Postgres."""

from __future__ import annotations

import os
import signal
import threading
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from mock_api import DataConfig, FaultConfig
from retailctl.extract.batch import Batch
from tests.helpers import (
    API_KEY,
    bronze_rows,
    by_entity,
    cursor_of,
    extract,
    invoke,
    run_cli,
    settings_for,
    source_sales,
    wait_until,
)
from tests.helpers.scripted_api import Gate, Reply, Request, ScriptedApi, normal_page


def test_full_then_incremental_extraction_after_the_source_grows(
    start_mock, data_dir: Path, db_url: str
) -> None:
    small = start_mock(sales=1_200)
    first = by_entity(extract(settings_for(data_dir, db_url, small.url)))
    assert (first["sales"].records, first["sales"].cursor_to) == (1_200, 1_201)
    assert first["customers"].records == 500 and first["products"].records == 200

    grown = start_mock(sales=1_750)  # same seed: the same first 1,200 sales, then 550 more
    second = by_entity(extract(settings_for(data_dir, db_url, grown.url)))
    assert (second["sales"].records, second["sales"].cursor_from) == (550, 1_201)
    assert cursor_of(db_url) == 1_751
    assert second["customers"].unchanged and second["customers"].files == []

    truth = source_sales(DataConfig(sales=1_750))
    headers = bronze_rows(data_dir, "sales_customer")
    assert sorted(h["id"] for h in headers) == sorted(truth)
    lines = bronze_rows(data_dir, "sales_product")
    assert len(lines) == sum(len(sale["items"]) for sale in truth.values())
    assert sum(Decimal(repr(line["amount"])) for line in lines) == sum(
        Decimal(repr(item["amount"])) for sale in truth.values() for item in sale["items"]
    )
    sale_7 = next(h for h in headers if h["id"] == 7)
    assert {k: v for k, v in sale_7.items() if not k.startswith("_")} == {
        k: v for k, v in truth[7].items() if k != "items"
    }
    assert [(line["line_no"], line["product_sku"]) for line in lines if line["sale_id"] == 7] == [
        (n, item["product_sku"]) for n, item in enumerate(truth[7]["items"], start=1)
    ]


def test_every_record_carries_ingestion_ts_and_batch_id(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=300)
    extract(settings_for(data_dir, db_url, server.url))
    for entity in ("customers", "products", "sales_customer", "sales_product"):
        rows = bronze_rows(data_dir, entity)
        assert rows and all(row["_ingestion_ts"].endswith("+00:00") for row in rows)
        assert all(len(row["_batch_id"]) == 36 for row in rows)
    assert any("loyalty_tier" in row for row in bronze_rows(data_dir, "customers"))


def test_id_gaps_are_followed_by_highest_id_plus_one(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=1_000, gap_every=50)
    result = by_entity(
        extract(settings_for(data_dir, db_url, server.url, RETAIL_PAGE_SIZE="70"), entities=["sales"])
    )["sales"]
    truth = source_sales(DataConfig(sales=1_000, gap_every=50))
    assert result.records == 1_000
    assert result.cursor_to == max(truth) + 1 == 1_058
    assert sorted(h["id"] for h in bronze_rows(data_dir, "sales_customer")) == sorted(truth)


@pytest.mark.slow
def test_faults_and_throttling_still_yield_exactly_the_sources_sales(
    start_mock, data_dir: Path, db_url: str
) -> None:
    server = start_mock(sales=2_000, faults=FaultConfig(fail_rate=0.2, throttle_rate=0.1, retry_after_s=0))
    settings = settings_for(data_dir, db_url, server.url, RETAIL_PAGE_SIZE="100", RETAIL_HTTP_RETRIES="12")
    results = by_entity(extract(settings))
    truth = source_sales(DataConfig(sales=2_000))
    ids = [h["id"] for h in bronze_rows(data_dir, "sales_customer")]
    assert len(ids) == len(set(ids)) == 2_000 and set(ids) == set(truth)
    assert results["customers"].records == 500


def test_a_page_slower_than_the_timeout_is_retried(data_dir: Path, db_url: str) -> None:
    def slow_first_try(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number == 2:
            return Reply(delay_s=2.0)  # the second page, first try: past the 0.5 s timeout
        return None

    config = DataConfig(sales=300)
    with ScriptedApi(slow_first_try, config) as api:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="100", RETAIL_HTTP_TIMEOUT="0.5")
        result = by_entity(extract(settings, entities=["sales"]))["sales"]
        starts = [r.params["start_sales_id"] for r in api.requests if r.path == "/sales"]
    assert result.records == 300
    assert starts[:3] == [1, 101, 101]  # the slow page was asked for again


def test_each_thread_s_request_keeps_its_own_deadline() -> None:
    """The window's pages share one transport: another thread's requests must not push back
    the deadline of a page trickling in one byte at a time."""
    stop = threading.Event()

    def trickle_products(request: Request) -> Reply | None:
        return Reply(trickle_s=0.05) if request.path == "/products" else None

    from retailctl.extract.source import make_client

    quick: list[int] = []
    with (
        ScriptedApi(trickle_products, DataConfig(sales=10)) as api,
        make_client(api.url, API_KEY, 1.0) as http,
    ):

        def keep_asking() -> None:
            while not stop.is_set() and len(quick) < 500:
                quick.append(http.get("/sales", params={"limit": 1}).status_code)

        other = threading.Thread(target=keep_asking)
        other.start()
        try:
            with pytest.raises(httpx.ReadTimeout, match="no complete response within 1 s"):
                http.get("/products", params={"limit": 100})
            cut_while_others_asked = len(quick) < 500 and other.is_alive()
        finally:
            stop.set()
            other.join(30)
    assert cut_while_others_asked and quick and set(quick) == {200}


def test_rejected_api_key_is_exit_77_with_nothing_written(
    mock_api, cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    env = {**cli_env, "RETAIL_API_KEY": "WRONG-KEY-abc"}
    result = run_cli(["extract"], env=env)
    assert result.returncode == 77
    assert result.stderr.splitlines() == [
        "error: API key rejected: GET /customers answered HTTP 401; check RETAIL_API_KEY"
    ]
    assert not list((data_dir / "bronze").rglob("*.ndjson"))
    assert cursor_of(db_url) is None


def test_a_200_that_is_not_json_is_retried_then_exit_1_keeping_the_pages_before(
    cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    def html_from_third_page(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number >= 3:
            return Reply(body=b"<html><body>Service maintenance</body></html>")
        return None

    with ScriptedApi(html_from_third_page, DataConfig(sales=1_000)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100", "RETAIL_HTTP_RETRIES": "2"}
        result = run_cli(["extract", "--entity", "sales"], env=env)
        sales_requests = api.counts["/sales"]
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: sales: GET /sales answered 200 with a body that is not JSON (line 1 column 1: "
        "unexpected character, expected a JSON value): '<html><body>Service maintenance</body>"
        "</html>' (tried 2 times)"
    ]
    assert sales_requests == 4  # two good pages, then the bad one twice
    assert sorted(h["id"] for h in bronze_rows(data_dir, "sales_customer")) == list(range(1, 201))
    assert cursor_of(db_url) == 201  # the two good pages are kept; the next run resumes there


def test_a_200_without_items_fails_that_entity_and_the_others_still_run(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    def no_items(request: Request) -> Reply | None:
        return Reply(body=b'{"data": []}') if request.path == "/customers" else None

    with ScriptedApi(no_items, DataConfig(sales=300)) as api:
        result = run_cli(["extract"], env={**cli_env, "RETAIL_API_URL": api.url})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: customers: GET /customers answered 200 without an `items` field: '{\"data\": []}'"
    ]
    assert [line.split(",")[0] for line in result.stdout.splitlines()] == [
        "customers: 0 records",
        "products: 200 records",
        "sales: 300 sales",
    ]
    assert not list((data_dir / "bronze").glob("customers/*/*.ndjson"))
    assert len(bronze_rows(data_dir, "sales_customer")) == 300


def test_invalid_records_land_in_rejected_with_their_reason(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=2_000, invalid_rate=0.05)
    results = by_entity(extract(settings_for(data_dir, db_url, server.url)))
    rejected_sales = bronze_rows(data_dir, "sales", rejected=True)
    valid_ids = {h["id"] for h in bronze_rows(data_dir, "sales_customer")}
    assert results["sales"].rejected == len(rejected_sales) > 50
    assert results["sales"].records + results["sales"].rejected == 2_000
    assert valid_ids.isdisjoint({r["id"] for r in rejected_sales if "id" in r})
    assert {line["sale_id"] for line in bronze_rows(data_dir, "sales_product")} == valid_ids
    reasons = {r["_reject_reason"] for r in rejected_sales}
    assert "items missing or empty: a sale has at least one line" in reasons
    assert (
        "datetime not an RFC 3339 date-time with an offset "
        "(YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)" in reasons
    )
    assert any(reason.endswith("quantity missing or not an integer of at least 1") for reason in reasons)
    assert results["customers"].rejected == len(bronze_rows(data_dir, "customers", rejected=True)) > 0
    assert results["products"].rejected == len(bronze_rows(data_dir, "products", rejected=True)) > 0
    with psycopg.connect(db_url) as conn:
        logged = conn.execute("select entity, rejected from meta.extract_log order by id").fetchall()
    assert dict(logged) == {e: r.rejected for e, r in results.items()}


def test_inconsistent_totals_are_kept_and_counted(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=1_000, inconsistent_rate=0.1)
    result = by_entity(extract(settings_for(data_dir, db_url, server.url), entities=["sales"]))["sales"]
    truth = source_sales(DataConfig(sales=1_000, inconsistent_rate=0.1))
    expected = sum(
        1
        for sale in truth.values()
        if Decimal(repr(sale["total_amount"])) != sum(Decimal(repr(item["amount"])) for item in sale["items"])
    )
    assert result.records == 1_000
    assert result.inconsistent == expected > 50


def test_sales_paging_that_does_not_advance_is_stopped(data_dir: Path, db_url: str) -> None:
    def ignore_start(request: Request) -> Reply | None:
        if request.path == "/sales":  # always the first page, whatever start_sales_id says
            return Reply(
                body=orjson.dumps({"items": [api.data.sale(k) for k in range(100)], "total_items": 1_000})
            )
        return None

    with ScriptedApi(ignore_start, DataConfig(sales=1_000)) as api:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="100")
        result = by_entity(extract(settings, entities=["sales"]))["sales"]
        sales_requests = api.counts["/sales"]
    assert result.records == 100 and sales_requests == 2
    assert result.warnings == [
        "/sales?start_sales_id=101 returned no sale at or after that id; "
        "paging does not advance, stopping there"
    ]
    assert cursor_of(db_url) == 101


def test_a_source_ignoring_start_past_its_count_still_warns(data_dir: Path, db_url: str) -> None:
    """With id gaps the cursor passes total_items (a count): a source then ignoring
    start_sales_id is a stall to warn about, not the original API's end of data."""
    config = DataConfig(sales=300, gap_every=10)
    ignoring = threading.Event()

    def ignore_start(request: Request) -> Reply | None:
        if ignoring.is_set() and request.path == "/sales":
            items = [api.data.sale(k) for k in range(100)]
            return Reply(body=orjson.dumps({"items": items, "total_items": 300}))
        return None

    with ScriptedApi(ignore_start, config) as api:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="100", RETAIL_SALES_LOOKBACK="0")
        [first] = extract(settings, entities=["sales"])
        ignoring.set()
        [stalled] = extract(settings, entities=["sales"])
    cursor = api.data.sale_id(299) + 1
    assert first.cursor_to == cursor > 300
    assert (stalled.records, stalled.cursor_to) == (0, cursor)
    assert stalled.warnings == [_no_advance(cursor)]


def _no_advance(start: int) -> str:
    return (
        f"/sales?start_sales_id={start} returned no sale at or after that id; "
        "paging does not advance, stopping there"
    )


def test_original_api_limit_250_ignored_offset_and_never_empty_sales(data_dir: Path, db_url: str) -> None:
    """The original project's API: raw key header, limit <= 250, no offset, /sales never empty."""
    config = DataConfig(sales=600, customers=300)

    def original(request: Request) -> Reply | None:
        if request.path == "/sales":
            count = config.sales
            first = min(request.params["start_sales_id"], count) - 1
            limit = request.params["limit"]
            if limit > 250:
                return Reply(status=422, body=b'{"detail": "limit must be <= 250"}')
            first = min(first, count - limit)  # past the end: the last page again, never empty
            items = [api.data.sale(k) for k in range(first, first + limit)]
            return Reply(body=orjson.dumps({"items": items, "total_items": count}))
        return None

    with ScriptedApi(original, config, max_limit=250, honour_offset=False) as api:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="1000")
        results = by_entity(extract(settings))
        header = api.requests[0]
        [idle] = extract(settings, entities=["sales"])  # the lookback re-read, then its end
    assert results["sales"].records == 600 and cursor_of(db_url) == 601
    # the last page again, past the end, is the end (total_items says so), not a warning
    assert results["sales"].warnings == [] and idle.warnings == []
    assert (idle.records, idle.unchanged, idle.cursor_to) == (0, 600, 601)
    assert results["customers"].records == 250  # offset ignored: the first page only, warned
    assert any("ignores offset" in w for w in results["customers"].warnings)
    assert results["products"].records == 200
    assert header.params["limit"] == 1000  # tried once, then 250 for every later request


def test_a_source_answering_fewer_than_asked_is_paged_to_its_end(data_dir: Path, db_url: str) -> None:
    """The contract says "at most L": a source that caps its pages at 30, silently, when asked
    for 100 still has more. A short page is not the end (an empty one is), in the first run and
    in the lookback window's slices of an idle one."""
    config = DataConfig(sales=500, gap_every=70)

    def at_most_30(request: Request) -> Reply | None:
        if request.path == "/sales":
            _, body = normal_page(api.data, request.path, request.params)
            page = orjson.loads(body)
            return Reply(body=orjson.dumps({**page, "items": page["items"][:30]}))
        return None

    with ScriptedApi(at_most_30, config) as api:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="100")
        [first] = extract(settings, entities=["sales"])
        [idle] = extract(settings, entities=["sales"])
    last_id = api.data.sale_id(499)
    assert (first.records, first.cursor_to, first.warnings) == (500, last_id + 1, [])
    assert (idle.records, idle.unchanged, idle.cursor_to, idle.warnings) == (0, 500, last_id + 1, [])
    assert sorted(h["id"] for h in bronze_rows(data_dir, "sales_customer")) == [
        api.data.sale_id(k) for k in range(500)
    ]


def test_max_sales_per_run_caps_the_extraction(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=1_000)
    settings = settings_for(data_dir, db_url, server.url, RETAIL_MAX_SALES_PER_RUN="333")
    first = by_entity(extract(settings, entities=["sales"]))["sales"]
    second = by_entity(extract(settings, entities=["sales"]))["sales"]
    assert (first.records, first.cursor_to) == (333, 334)
    assert (second.records, second.cursor_to) == (333, 667)


def test_retries_exhausted_is_exit_69_and_the_cursor_stays_at_the_last_durable_chunk(
    cli_env: dict[str, str], db_url: str
) -> None:
    def down_after_ten_pages(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number > 10:
            return Reply(status=503, body=b'{"detail": "down"}')
        return None

    with ScriptedApi(down_after_ten_pages, DataConfig(sales=5_000)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100", "RETAIL_HTTP_RETRIES": "3"}
        result = run_cli(["extract", "--entity", "sales"], env=env)
    assert result.returncode == 69
    assert result.stderr.splitlines() == [
        f"error: GET {api.url}/sales failed after 3 attempts (last: HTTP 503)"
    ]
    assert cursor_of(db_url) == 1_001


def test_backfill_from_id_rereads_and_keeps_the_cursor(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=500)
    settings = settings_for(data_dir, db_url, server.url, RETAIL_SALES_LOOKBACK="0")
    extract(settings, entities=["sales"])
    result = by_entity(extract(settings, entities=["sales"], from_id=401))["sales"]
    assert result.records == 100
    assert result.warnings[0].startswith("backfill: reading sales from id 401")
    assert cursor_of(db_url) == 501


@pytest.mark.slow
def test_sigkill_mid_extraction_then_rerun_holds_every_sale(
    cli_env: dict[str, str], data_dir: Path, db_url: str, spawn, gate: Gate
) -> None:
    first_stop, second_stop = Gate(), gate

    def hold_two_pages(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number in (12, 30):
            (first_stop if request.number == 12 else second_stop).hold()
        return None

    with ScriptedApi(hold_two_pages, DataConfig(sales=6_000)) as api:
        # no lookback: the second run starts at the cursor, so the request numbers below hold
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100", "RETAIL_SALES_LOOKBACK": "0"}
        # Chunks of 8 pages: page 12 is asked for once the first chunk is durable, page 30 in
        # the second run (from id 801) once two more are; each kill lands mid-chunk.
        for stop, cursor in ((first_stop, 801), (second_stop, 2_401)):
            victim = spawn(["extract", "--entity", "sales"], env)
            wait_until(
                lambda stop=stop, cursor=cursor: stop.held.is_set() and cursor_of(db_url) == cursor,
                60,
                f"the extraction to be mid-chunk past cursor {cursor}",
                alive=victim,
            )
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            stop.open()
        partial = {h["id"] for h in bronze_rows(data_dir, "sales_customer")}
        assert 0 < len(partial) < 6_000, "the kill landed mid-extraction"
        rerun = run_cli(["extract", "--entity", "sales"], env=env)
    assert rerun.returncode == 0, rerun.stderr
    ids = {h["id"] for h in bronze_rows(data_dir, "sales_customer")}
    assert ids == set(range(1, 6_001))
    assert not list((data_dir / "bronze").rglob("*.tmp"))
    lines = bronze_rows(data_dir, "sales_product")  # every file parses: none is half-written
    assert {line["sale_id"] for line in lines} == ids


def test_sigterm_mid_extraction_exits_143_and_rolls_back(
    cli_env: dict[str, str], data_dir: Path, db_url: str, spawn, gate: Gate
) -> None:
    def hold_page_12(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number == 12:
            gate.hold()  # the first chunk (pages 1-8) is durable; pages 9-11 are in the open one
        return None

    with ScriptedApi(hold_page_12, DataConfig(sales=6_000)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100"}
        victim = spawn(["extract", "--entity", "sales"], env, output=True)
        wait_until(
            lambda: gate.held.is_set() and cursor_of(db_url) == 801,
            60,
            "the extraction to be mid-chunk past its first chunk",
            alive=victim,
        )
        victim.send_signal(signal.SIGTERM)
        _, stderr = victim.communicate(timeout=30)
    assert victim.returncode == 143
    assert stderr.splitlines()[-1] == "error: stopped by SIGTERM; the open transaction was rolled back"
    assert not list((data_dir / "bronze").rglob("*.tmp"))
    ids = {h["id"] for h in bronze_rows(data_dir, "sales_customer")}
    assert cursor_of(db_url) == max(ids) + 1  # the cursor is exactly past what is durable


def test_files_are_0600_and_directories_0700(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=200, invalid_rate=0.1)
    extract(settings_for(data_dir, db_url, server.url))
    bronze_dir = data_dir / "bronze"
    files = list(bronze_dir.rglob("*.ndjson"))
    directories = [p for p in bronze_dir.rglob("*") if p.is_dir()] + [bronze_dir]
    assert len(files) >= 7 and any("_rejected" in str(p) for p in files)
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in directories} == {"0o700"}


@pytest.mark.slow
def test_the_api_key_never_appears_in_output_files_or_meta(
    start_mock, cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    def fail_twice(request: Request) -> Reply | None:
        return Reply(status=503, body=b"{}") if request.number <= 2 else None

    with ScriptedApi(fail_twice, DataConfig(sales=500, invalid_rate=0.05)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url}
        outputs = [
            run_cli(args, env=env)
            for args in (["extract"], ["extract", "--json"], ["config"], ["state", "show"])
        ]
        bad_key = run_cli(["extract"], env={**env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    text = "".join(r.stdout + r.stderr for r in [*outputs, bad_key])
    assert all(r.returncode == 0 for r in outputs) and bad_key.returncode == 77
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    written = ("customers", "products", "sales_customer", "sales_product", "_rejected")
    assert {path.relative_to(data_dir).parts[:2] for path in files} == {("bronze", d) for d in written}
    for path in files:
        assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in text
    with psycopg.connect(db_url) as conn:
        dump = str(conn.execute("select * from meta.ingestion_state").fetchall()) + str(
            conn.execute("select * from meta.extract_log").fetchall()
        )
    assert API_KEY not in dump


def test_state_set_show_and_reset(cli_env: dict[str, str]) -> None:
    assert invoke(["state", "set", "--last-sales-id", "42"], env=cli_env).stdout.splitlines() == [
        "next sales id: 1 -> 42"
    ]
    shown = invoke(["state", "show"], env=cli_env).stdout.splitlines()
    assert shown[0] == "next sales id: 42"
    assert shown[2] == "note: set by hand with `retailctl state set` (was 1)"
    refused = invoke(["state", "reset"], env=cli_env)
    assert refused.exit_code == 2
    reset = invoke(["state", "reset", "--yes"], env=cli_env)
    assert reset.stdout.splitlines() == ["next sales id: 42 -> 1; snapshots will be written again"]


def test_database_url_without_api_url_is_exit_78(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "RETAIL_API_URL"}
    result = invoke(["extract"], env=env)
    assert result.exit_code == 78
    assert result.stderr.startswith("error: RETAIL_API_URL is not set")


def test_demo_mode_says_so_first(tmp_path: Path, embedded_data_dir: Path) -> None:
    """Demo mode's data dir is ./data, the one the fixture deletes the cluster of afterwards."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = run_cli(["extract", "--entity", "products"], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("DEMO MODE: no RETAIL_API_URL or RETAIL_DATABASE_URL is set")
    assert lines[1].startswith("products: 200 records, 0 rejected, 1 file(s)")


@pytest.mark.parametrize("entity", ["nonsense"])
def test_unknown_entity_is_a_usage_error(entity: str, cli_env: dict[str, str]) -> None:
    result = invoke(["extract", "--entity", entity], env=cli_env)
    assert result.exit_code == 2
    assert "unknown entity nonsense" in result.stderr


def test_records_without_usable_ids_are_rejected_and_never_loop(data_dir: Path, db_url: str) -> None:
    def broken_ids(request: Request) -> Reply | None:
        if request.path == "/sales":
            sale = api.data.sale(0)
            return Reply(
                body=orjson.dumps({"items": [{**sale, "id": 0}, {**sale, "id": -3}], "total_items": 2})
            )
        if request.path == "/customers":
            return Reply(
                body=orjson.dumps(
                    {"items": [{"customer_id": ["C1"], "emails": [], "phone_numbers": []}], "total_items": 1}
                )
            )
        return None

    with ScriptedApi(broken_ids) as api:
        settings = settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="2")
        results = by_entity(extract(settings, entities=["customers", "sales"]))
        sales_requests = api.counts["/sales"]
    assert (results["sales"].rejected, results["sales"].records, sales_requests) == (2, 0, 1)
    assert results["sales"].warnings[0].startswith("/sales?start_sales_id=1 returned no sale")
    assert [r["_reject_reason"] for r in bronze_rows(data_dir, "sales", rejected=True)] == [
        "id missing or not a positive integer"
    ] * 2
    assert results["customers"].rejected == 1


def test_429_waits_as_long_as_retry_after_says() -> None:
    from retailctl.extract.source import SourceClient, make_client

    def throttle_once(request: Request) -> Reply | None:
        if request.number == 1:
            return Reply(status=429, body=b'{"detail": "slow down"}', headers={"Retry-After": "7"})
        return None

    slept: list[float] = []
    with ScriptedApi(throttle_once) as api, make_client(api.url, API_KEY, 5) as http:
        client = SourceClient(http, attempts=3, sleep=slept.append)
        page = client.page("/products", {"limit": 10, "offset": 0})
    assert slept == [7.0]  # the server's word, not the backoff's
    assert len(page.items) == 10 and client.retries == 1


def test_a_batch_commits_its_files_once(tmp_path: Path) -> None:
    """A failure after the files are durable (the cursor update) must not commit them again."""
    batch = Batch(tmp_path / "bronze")
    batch.file("sales_customer").write({"id": 1})
    batch.reject("sales", {"id": 2}, "items missing")
    paths = batch.commit()
    assert [Path(p).parent.parent.name for p in paths] == ["sales_customer"]
    assert batch.commit() == []
    assert len(list((tmp_path / "bronze").rglob("*.ndjson"))) == 2
