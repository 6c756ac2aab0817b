"""A hostile or broken source API: whatever it sends, a record is loaded exactly or rejected with
its reason, one bad record or page never blocks the others, and every run ends in bounded time,
memory and disk. A scripted server on loopback serves each case to the real CLI."""

from __future__ import annotations

import copy
import gzip
import ssl
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from mock_api import DataConfig, RetailData
from retailctl.extract.source import make_client
from tests.helpers import (
    bronze_rows,
    cursor_of,
    run_cli,
    run_measured,
    tree_bytes,
)
from tests.helpers.scripted_api import Reply, Request, ScriptedApi, fixed_page, normal_page

BIGINT_MAX = 2**63 - 1


def sales_of(count: int) -> list[dict[str, Any]]:
    data = RetailData(DataConfig(sales=count))
    return [data.sale(k) for k in range(count)]


def serving(
    sales: list[dict[str, Any]], customers: list[Any] | None = None, products: list[Any] | None = None
):  # type: ignore[no-untyped-def]
    """A script serving these records (the mock's customers and products by default)."""

    def script(request: Request) -> Reply | None:
        if request.path == "/sales":
            return fixed_page(sales, request)
        if request.path == "/customers" and customers is not None:
            return fixed_page(customers, request)
        if request.path == "/products" and products is not None:
            return fixed_page(products, request)
        return None

    return script


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql).fetchall()


def test_an_items_own_line_no_and_sale_id_never_override_the_computed_keys(
    cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    sales = sales_of(20)
    truth_3 = [(item["product_sku"], item["quantity"]) for item in sales[2]["items"]]
    sales[7]["items"] = [  # sale 8: both lines say line_no 1; the second claims sale 3
        {"product_sku": "SKU-00001", "quantity": 1, "amount": 1.5, "line_no": 1},
        {"product_sku": "SKU-00002", "quantity": 2, "amount": 3.0, "line_no": 1, "sale_id": 3},
    ]
    sales[8]["items"][0] |= {"line_no": 7, "_source_line_no": 7}  # sale 9: nowhere to keep it
    with ScriptedApi(serving(sales)) as api:
        result = run_cli(["run-all"], env={**cli_env, "RETAIL_API_URL": api.url})
    assert result.returncode == 0, result.stderr
    assert "extract sales: 19 sales" in result.stdout
    assert query(
        db_url,
        "select sale_id, line_no, product_sku, quantity from silver.sales_product "
        "where sale_id in (3, 8) order by 1, 2",
    ) == [(3, n, sku, quantity) for n, (sku, quantity) in enumerate(truth_3, start=1)] + [
        (8, 1, "SKU-00001", 1),
        (8, 2, "SKU-00002", 2),
    ]
    assert query(db_url, "select sales_item_id from gold.sales_item where sale_id = 8 order by line_no") == [
        ("8-1",),
        ("8-2",),
    ]
    kept = [line for line in bronze_rows(data_dir, "sales_product") if line["sale_id"] == 8]
    assert [(line["line_no"], line.get("_source_line_no"), line.get("_source_sale_id")) for line in kept] == [
        (1, 1, None),
        (2, 1, 3),
    ]
    [rejected] = bronze_rows(data_dir, "sales", rejected=True)
    assert (rejected["id"], rejected["_reject_reason"]) == (
        9,
        ("line 1: has both 'line_no' (computed by retailctl) and '_source_line_no', where it would be kept"),
    )


def hostile_sales() -> tuple[list[dict[str, Any]], dict[int, str]]:
    """30 valid sales, then one per value Python holds and silver does not, with its reason."""
    sales = sales_of(30)
    template = sales[0]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"customer_id": "C\x00001"}, "customer_id contains a NUL character"),
        ({"datetime": "2024-W01-1T10:00:00+00:00"}, "datetime not an RFC 3339 date-time"),
        ({"datetime": "2026-01-01T10:00:00.1234567+00:00"}, "datetime not an RFC 3339 date-time"),
        ({"datetime": "2026-01-01T10:00:00+16:00"}, "datetime not an RFC 3339 date-time"),
        ({"datetime": "0001-01-01T00:00:00+01:00"}, "datetime not a valid date-time (years 1 to 9999)"),
        ({"customer_id": "C" * 20_000}, "customer_id longer than 255 characters"),
        ({"total_amount": 123456789012345678901234567890}, "total_amount not below 1e+15"),
        (
            {"total_amount": 1234567890.123456789},
            "total_amount more than 15 significant digits (cannot be read exactly)",
        ),
        (
            {"items": [{"product_sku": "SKU-1", "quantity": 2**31, "amount": 1.0}]},
            "line 1: quantity out of range (1 to 2147483647)",
        ),
        (
            {"items": [{"product_sku": "S" * 20_000, "quantity": 1, "amount": 1.0}]},
            "line 1: product_sku longer than 255 characters",
        ),
        (
            {"items": [{"product_sku": "SKU-1", "quantity": 1, "amount": 1.0, "note": "\x00"}]},
            "",
        ),  # a NUL in a field silver does not store: kept, valid
    ]
    reasons = {}
    for offset, (change, reason) in enumerate(cases, start=31):
        sale = copy.deepcopy(template) | change | {"id": offset}
        sales.append(sale)
        if reason:
            reasons[offset] = reason
    for sale_id in (BIGINT_MAX, BIGINT_MAX + 1):  # 2^63-1 (its cursor would overflow), 2^63
        sales.append(copy.deepcopy(template) | {"id": sale_id})
        reasons[sale_id] = "id above 9223372036854775806, the largest a bigint cursor can pass"
    return sales, reasons


def test_values_silver_cannot_store_are_rejected_at_extract_and_the_rest_reaches_gold(
    cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    sales, reasons = hostile_sales()
    data = RetailData(DataConfig())
    customers = [data.customer(i) for i in range(500)] + [
        {"customer_id": "X1", "emails": ["a\x00@example.com"], "phone_numbers": []},
        {"customer_id": "X" * 20_000, "emails": [], "phone_numbers": []},
    ]
    products = [data.product(i) for i in range(200)] + [
        {"product_sku": "P\x00", "description": "d", "unit_amount": 1.0, "supplier": "s"},
        {"product_sku": "P2", "description": "\x00", "unit_amount": 1.0, "supplier": "s"},
    ]
    with ScriptedApi(serving(sales, customers, products)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100"}
        result = run_cli(["run-all"], env=env)
    assert result.returncode == 0, result.stderr
    assert "extract sales: 31 sales" in result.stdout and "12 rejected" in result.stdout
    rejected = {row["id"]: row["_reject_reason"] for row in bronze_rows(data_dir, "sales", rejected=True)}
    assert rejected.keys() == reasons.keys()
    assert all(rejected[sale_id].startswith(reason) for sale_id, reason in reasons.items())
    assert [
        (row["customer_id"][:2], row["_reject_reason"])
        for row in bronze_rows(data_dir, "customers", rejected=True)
    ] == [("X1", "emails entry 1 contains a NUL character"), ("XX", "customer_id longer than 255 characters")]
    assert [row["_reject_reason"] for row in bronze_rows(data_dir, "products", rejected=True)] == [
        "product_sku contains a NUL character",
        "description contains a NUL character",
    ]
    valid = [sale for sale in sales if sale["id"] not in reasons]
    assert query(db_url, "select count(*), sum(total_amount) from silver.sales_customer") == [
        (31, sum(Decimal(repr(sale["total_amount"])) for sale in valid))
    ]
    lines = sum(len(sale["items"]) for sale in valid)
    assert query(db_url, "select count(*) from gold.sales_item") == [(lines,)]
    assert query(db_url, "select count(*) from silver.customers") == [(500,)]
    assert cursor_of(db_url) == 42  # past the valid ids; 2^63-1 never reached the cursor
    with ScriptedApi(serving(sales, customers, products)) as api:
        again = run_cli(["extract", "--entity", "sales"], env={**env, "RETAIL_API_URL": api.url})
    assert again.returncode == 0, again.stderr  # no crash after the files, no second copy
    assert len(bronze_rows(data_dir, "sales_customer")) == 31


UNPARSEABLE = {
    "nested deeper than the parser allows": (
        b'{"items": [{"customer_id": "C1", "emails": [], "phone_numbers": [], "x": '
        + b"[" * 1100
        + b"]" * 1100
        + b'}], "total_items": 1}',
        "line 1 column 1096: depth limit exceeded",
    ),
    "a lone surrogate": (
        b'{"items": [{"customer_id": "\\ud800", "emails": [], "phone_numbers": []}], "total_items": 1}',
        "line 1 column 29: no low surrogate in string",
    ),
    "a bare NaN": (
        b'{"items": [{"customer_id": "C1", "emails": [], "phone_numbers": [], "score": NaN}], '
        b'"total_items": 1}',
        "line 1 column 78: unexpected character, expected a JSON value",
    ),
}


@pytest.mark.parametrize("case", list(UNPARSEABLE))
def test_an_unparseable_customers_page_fails_customers_alone_then_a_clean_run_proceeds(
    case: str, cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    body, problem = UNPARSEABLE[case]
    clean = False

    def script(request: Request) -> Reply | None:
        return Reply(body=body) if request.path == "/customers" and not clean else None

    with ScriptedApi(script, DataConfig(sales=300)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_HTTP_RETRIES": "2"}
        broken = run_cli(["extract"], env=env)
        customer_requests = api.counts["/customers"]
        clean = True
        fixed = run_cli(["extract"], env=env)
    excerpt = body[:80].decode() + ("…" if len(body) > 80 else "")
    assert broken.returncode == 1
    assert broken.stderr.splitlines() == [
        f"error: customers: GET /customers answered 200 with a body that is not JSON ({problem}): "
        f"{excerpt!r} (tried 2 times)"
    ]
    assert customer_requests == 2
    assert [line.split(",")[0] for line in broken.stdout.splitlines()] == [
        "customers: 0 records",
        "products: 200 records",
        "sales: 300 sales",
    ]
    assert "FAILED (see the error)" in broken.stdout.splitlines()[0]
    assert cursor_of(db_url) == 301
    assert fixed.returncode == 0, fixed.stderr
    assert len(bronze_rows(data_dir, "customers")) == 500


def test_an_unparseable_sales_page_keeps_the_cursor_and_a_backfill_past_it_skips_nothing(
    cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    broken = True

    def script(request: Request) -> Reply | None:
        if request.path == "/sales" and broken and request.params["start_sales_id"] == 201:
            return Reply(body=b'{"items": [{"id": 201, "total_amount": NaN}]}')
        return None

    with ScriptedApi(script, DataConfig(sales=500)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100", "RETAIL_HTTP_RETRIES": "2"}
        first = run_cli(["extract", "--entity", "sales"], env=env)
        assert first.returncode == 1
        assert first.stderr.splitlines() == [
            "error: sales: GET /sales answered 200 with a body that is not JSON (line 1 column "
            "40: unexpected character, expected a JSON value): "
            '\'{"items": [{"id": 201, "total_amount": NaN}]}\' (tried 2 times)'
        ]
        assert cursor_of(db_url) == 201  # the two pages before it are kept

        backfill = run_cli(["extract", "--entity", "sales", "--from-id", "301"], env=env)
        assert backfill.returncode == 0, backfill.stderr
        assert backfill.stderr.splitlines() == [
            "warning: backfill: reading sales from id 301, beyond the cursor: the cursor stays at "
            "201 (ids 201 to 300 are not read yet)"
        ]
        assert cursor_of(db_url) == 201  # sales 201 to 300 are not skipped

        broken = False
        clean = run_cli(["extract", "--entity", "sales"], env=env)
    assert clean.returncode == 0, clean.stderr
    assert cursor_of(db_url) == 501
    assert {h["id"] for h in bronze_rows(data_dir, "sales_customer")} == set(range(1, 501))


def test_a_server_sending_one_byte_per_second_is_cut_at_the_total_deadline(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    def slowloris(request: Request) -> Reply | None:
        return Reply(trickle_s=1.0) if request.path == "/customers" else None

    with ScriptedApi(slowloris) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_HTTP_TIMEOUT": "2", "RETAIL_HTTP_RETRIES": "2"}
        measured = run_measured(["extract"], env=env, timeout=120)
        attempts = api.counts["/customers"]
    assert measured.returncode == 69
    assert measured.stderr.splitlines() == [
        f"error: GET {api.url}/customers failed after 2 attempts (last: ReadTimeout: no complete "
        "response within 2 s)"
    ]
    assert attempts == 2
    assert measured.seconds < 15  # 2 attempts of 2 s, a backoff under 1 s, start-up
    assert not list((data_dir / "bronze").rglob("*.ndjson*"))


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """A valid JSON page of 2 GiB (spaces), gzipped to about 2 MB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(b'{"items": [')]
    spaces = b" " * (1 << 20)
    parts += [compressor.compress(spaces) for _ in range(2048)]
    parts += [compressor.compress(b'], "total_items": 0}'), compressor.flush()]
    return b"".join(parts)


def test_a_gzip_bomb_fails_its_entity_fast_with_bounded_memory(
    gzip_bomb: bytes, cli_env: dict[str, str], data_dir: Path
) -> None:
    assert len(gzip_bomb) < 2_200_000

    def bomb(request: Request) -> Reply | None:
        if request.path == "/products":
            return Reply(body=gzip_bomb, headers={"Content-Encoding": "gzip"})
        return None

    with ScriptedApi(bomb, DataConfig(sales=200)) as api:
        env = {**cli_env, "RETAIL_API_URL": api.url, "RETAIL_HTTP_RETRIES": "2"}
        measured = run_measured(["extract"], env=env)
    assert measured.returncode == 1
    assert measured.stderr.splitlines() == [
        "error: products: GET /products answered a body larger than 64 MB decoded "
        "(RETAIL_MAX_RESPONSE_MB) (tried 2 times)"
    ]
    # 64 MB of body and a megabyte decoded at a time over the process itself: not the 2 GiB
    assert measured.peak_rss_mb < 200, measured.peak_rss_mb
    assert measured.seconds < 60
    assert len(bronze_rows(data_dir, "customers")) == 500
    assert len(bronze_rows(data_dir, "sales_customer")) == 200


@pytest.mark.parametrize(
    ("moving_total", "env", "cap"),
    [
        (True, {}, 2_100),  # total_items always 1,000 ahead: twice the first one plus a page
        (False, {"RETAIL_MAX_SNAPSHOT_RECORDS": "1000"}, 1_000),  # no total_items: the absolute cap
    ],
)
def test_a_snapshot_that_pages_on_forever_fails_at_its_cap_writing_nothing(
    moving_total: bool, env: dict[str, str], cap: int, cli_env: dict[str, str], data_dir: Path
) -> None:
    def endless(request: Request) -> Reply | None:
        if request.path != "/products":
            return None
        offset = request.params["offset"]
        items = [
            {
                "product_sku": f"NEW-{offset + i}",
                "description": "x" * 200,
                "unit_amount": 1.0,
                "supplier": "s",
            }
            for i in range(request.params["limit"])
        ]
        page: dict[str, Any] = {"items": items}
        if moving_total:
            page["total_items"] = offset + 1_000
        return Reply(body=orjson.dumps(page))

    with ScriptedApi(endless, DataConfig(sales=100)) as api:
        measured = run_measured(
            ["extract"], env={**cli_env, "RETAIL_API_URL": api.url, "RETAIL_PAGE_SIZE": "100", **env}
        )
        pages = api.counts["/products"]
    assert measured.returncode == 1
    assert measured.stderr.splitlines() == [
        f"error: products: /products: more than {cap} records (at most twice total_items plus a "
        "page, and RETAIL_MAX_SNAPSHOT_RECORDS); the source pages on and on, no snapshot written"
    ]
    assert pages == cap // 100 + 1
    assert not list((data_dir / "bronze" / "products").rglob("*.ndjson*"))
    assert not list(data_dir.rglob("*.tmp"))
    assert tree_bytes(data_dir / "bronze") < 400_000  # the customers and sales, nothing of it
    assert len(bronze_rows(data_dir, "sales_customer")) == 100
    assert measured.peak_rss_mb < 150, measured.peak_rss_mb


def test_compressed_pages_decode_exactly(cli_env: dict[str, str], data_dir: Path) -> None:
    """gzip, zlib-framed deflate and raw deflate (as servers send "deflate") all read."""
    data = RetailData(DataConfig(sales=50))

    def compressed(request: Request) -> Reply | None:
        _, body = normal_page(data, request.path, request.params)
        if request.path == "/customers":
            return Reply(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        if request.path == "/products":
            return Reply(body=zlib.compress(body), headers={"Content-Encoding": "deflate"})
        raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return Reply(body=raw.compress(body) + raw.flush(), headers={"Content-Encoding": "deflate"})

    with ScriptedApi(compressed, DataConfig(sales=50)) as api:
        result = run_cli(["extract"], env={**cli_env, "RETAIL_API_URL": api.url})
    assert result.returncode == 0, result.stderr
    assert [row["customer_id"] for row in bronze_rows(data_dir, "customers")] == [
        data.customer(i)["customer_id"] for i in range(500)
    ]
    assert len(bronze_rows(data_dir, "products")) == 200
    assert [row["id"] for row in bronze_rows(data_dir, "sales_customer")] == list(range(1, 51))


def test_out_of_order_ids_in_a_page_are_counted_in_the_summary(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    sales = sales_of(10)
    sales[2], sales[4] = sales[4], sales[2]  # ids 1, 2, 5, 4, 3, 6, …
    with ScriptedApi(serving(sales)) as api:
        result = run_cli(["extract", "--entity", "sales"], env={**cli_env, "RETAIL_API_URL": api.url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sales: 10 sales, ")
    assert ", 2 out-of-order ids, " in result.stdout
    assert sorted(h["id"] for h in bronze_rows(data_dir, "sales_customer")) == list(range(1, 11))


def test_an_https_source_gets_a_verifying_tls_context_and_an_http_one_none() -> None:
    """Loading the CA bundle took 40-80 ms of every run, twice, for a plain-HTTP source too."""
    with make_client("https://source.example", "key", 5) as client:
        context = client._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    with make_client("http://127.0.0.1:8000", "key", 5) as client:
        assert client._transport._pool._ssl_context is None  # type: ignore[attr-defined]
