"""The bundled mock API: contract, auth, determinism, scale and fault injection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mock_api import BackgroundServer, DataConfig, FaultConfig, MockConfig, RetailData, create_app
from tests.helpers import API_KEY, wait_until


def get(server: BackgroundServer, path: str, **params: int) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers={"Authorization": API_KEY})


@pytest.mark.parametrize("header", [None, "WRONG_KEY", "Bearer WRONG_KEY", ""])
def test_missing_or_wrong_key_is_401(mock_api: BackgroundServer, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = httpx.get(mock_api.url + "/sales", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


@pytest.mark.parametrize("header", [API_KEY, f"Bearer {API_KEY}"])
def test_both_header_forms_are_accepted(mock_api: BackgroundServer, header: str) -> None:
    response = httpx.get(mock_api.url + "/products", headers={"Authorization": header})
    assert response.status_code == 200
    assert response.json()["total_items"] == 200


@pytest.mark.parametrize("limit", [0, 1001])
def test_out_of_range_limit_is_422(mock_api: BackgroundServer, limit: int) -> None:
    assert get(mock_api, "/sales", limit=limit).status_code == 422


@pytest.mark.parametrize(("path", "key"), [("/products", "product_sku"), ("/customers", "customer_id")])
def test_offset_paging_reaches_exactly_total_items(mock_api: BackgroundServer, path: str, key: str) -> None:
    seen: list[str] = []
    offset, total = 0, None
    while True:
        body = get(mock_api, path, limit=70, offset=offset).json()
        total = body["total_items"]
        seen += [item[key] for item in body["items"]]
        if len(body["items"]) < 70:
            break
        offset += 70
    assert len(seen) == len(set(seen)) == total


def test_sales_paging_reaches_exactly_total_items_with_id_gaps(start_mock) -> None:  # type: ignore[no-untyped-def]
    server = start_mock(sales=2_345, gap_every=100)
    ids: list[int] = []
    start = 1
    while True:
        body = get(server, "/sales", start_sales_id=start, limit=250).json()
        ids += [sale["id"] for sale in body["items"]]
        if len(body["items"]) < 250:
            break
        start = body["items"][-1]["id"] + 1
    assert len(ids) == len(set(ids)) == body["total_items"] == 2_345
    assert ids == sorted(ids)
    assert ids[99:101] == [100, 104]  # a gap of three ids after every 100 sales
    assert get(server, "/sales", start_sales_id=101, limit=1).json()["items"][0]["id"] == 104


def test_sales_lines_add_up_to_the_cent(mock_api: BackgroundServer) -> None:
    products = {
        p["product_sku"]: Decimal(str(p["unit_amount"]))
        for p in get(mock_api, "/products", limit=1000).json()["items"]
    }
    sales = get(mock_api, "/sales", start_sales_id=1, limit=1000).json()["items"]
    assert len(sales) == 1000
    for sale in sales:
        assert 1 <= len(sale["items"]) <= 5
        lines = sum(Decimal(str(item["amount"])) for item in sale["items"])
        assert Decimal(str(sale["total_amount"])) == lines
        for item in sale["items"]:
            full = products[item["product_sku"]] * item["quantity"]
            assert Decimal(str(item["amount"])) <= full
    offsets = {sale["datetime"][-6:] for sale in sales}
    assert len(offsets) > 3 and "+05:30" in offsets


def test_same_seed_gives_byte_identical_pages() -> None:
    pages = []
    for _ in range(2):
        with BackgroundServer(MockConfig(data=DataConfig(seed=7), api_key=API_KEY)) as server:
            pages.append(
                [get(server, path, limit=300).content for path in ("/sales", "/customers", "/products")]
            )
    assert pages[0] == pages[1]
    with BackgroundServer(MockConfig(data=DataConfig(seed=8), api_key=API_KEY)) as other:
        assert get(other, "/sales", limit=300).content != pages[0][0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve_cli() -> Iterator[Callable[[list[str]], tuple[subprocess.Popen[bytes], int]]]:
    """Start `retailctl api serve` with these options on a free port; stopped after the test."""
    servers: list[subprocess.Popen[bytes]] = []

    def start(options: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "retailctl", "api", "serve", "--port", str(port), *options],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return servers[-1], port

    yield start
    for server in servers:
        server.terminate()
        server.wait(10)


def first_answer(url: str, params: dict[str, int]) -> httpx.Response | None:
    """The answer, or None while nothing listens on the port yet."""
    try:
        return httpx.get(url, params=params, headers={"Authorization": API_KEY})
    except httpx.ConnectError:
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used: its own work, whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_million_sales_start_in_under_two_seconds(serve_cli) -> None:
    """Start-up does not grow with the source: measured in the server's CPU time, which a busy
    machine does not inflate as it does wall time."""
    server, port = serve_cli(["--sales", "1000000", "--api-key", API_KEY])
    response = wait_until(
        lambda: first_answer(f"http://127.0.0.1:{port}/sales", {"start_sales_id": 999_001, "limit": 1000}),
        30,
        "the server to answer",
        alive=server,
        interval=0.02,
    )
    used = cpu_seconds(server.pid)
    body = response.json()
    assert body["total_items"] == 1_000_000
    assert [s["id"] for s in body["items"]] == list(range(999_001, 1_000_001))
    assert used < 2.0, f"first page of a 1M-sale source after {used:.2f}s of CPU"


def test_faults_appear_at_the_configured_rates() -> None:
    faults = FaultConfig(fail_rate=0.2, throttle_rate=0.1)
    client = TestClient(create_app(MockConfig(faults=faults, api_key=API_KEY)))  # in-process
    statuses = [
        client.get("/products", params={"limit": 1}, headers={"Authorization": API_KEY}).status_code
        for _ in range(1000)
    ]
    throttled = [s for s in statuses if s == 429]
    failed = [s for s in statuses if s in (500, 503)]
    assert 0.07 < len(throttled) / 1000 < 0.13
    assert 0.16 < len(failed) / 1000 < 0.24
    assert {500, 503} <= set(failed)
    assert len(throttled) + len(failed) + statuses.count(200) == 1000
    response = next(
        r
        for r in (client.get("/sales", headers={"Authorization": API_KEY}) for _ in range(200))
        if r.status_code == 429
    )
    assert response.headers["Retry-After"] == "1"


def test_latency_is_added(start_mock) -> None:  # type: ignore[no-untyped-def]
    server = start_mock(faults=FaultConfig(latency_ms=150))
    started = time.monotonic()
    assert get(server, "/products", limit=1).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_live_mode_adds_sales_over_time() -> None:
    config = MockConfig(data=DataConfig(sales=100, live_rate_per_min=600), api_key=API_KEY)
    client = TestClient(create_app(config))

    def sales_from_101() -> dict[str, Any]:
        return client.get(
            "/sales", params={"start_sales_id": 101, "limit": 10}, headers={"Authorization": API_KEY}
        ).json()

    first = client.get("/sales", headers={"Authorization": API_KEY}).json()["total_items"]
    body = wait_until(
        lambda: (page := sales_from_101())["total_items"] >= 103 and page,
        10,
        "three live sales (10 a second)",
    )
    assert first >= 100
    assert body["total_items"] >= 103
    assert body["items"][0]["id"] == 101


# -- a source that changes its past ------------------------------------------------------------


def utc_day(moment: str) -> date:
    return datetime.fromisoformat(moment).astimezone(UTC).date()


def line_total(sale: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(item["amount"])) for item in sale["items"]), Decimal(0))


def all_sales(server: BackgroundServer) -> dict[int, dict[str, Any]]:
    sales: dict[int, dict[str, Any]] = {}
    start = 1
    while True:
        items = get(server, "/sales", start_sales_id=start, limit=1000).json()["items"]
        sales.update((sale["id"], sale) for sale in items)
        if len(items) < 1000:
            return sales
        start = items[-1]["id"] + 1


def listed(server: BackgroundServer, path: str, key: str) -> tuple[list[str], int]:
    body = get(server, path, limit=1000).json()
    return [item[key] for item in body["items"]], body["total_items"]


def test_each_correction_kind_changes_only_what_it_says() -> None:
    config = DataConfig(sales=2_000, corrections=40)
    original, corrected = RetailData(DataConfig(sales=2_000)), RetailData(config)
    kinds = Counter(c.kind for c in corrected.corrections())
    # handed out in turn; three picked for a line removal have one line: changed in quantity
    assert kinds == {"customer": 10, "day": 10, "line_removed": 7, "quantity": 13}
    changed = {c.index: c.kind for c in corrected.corrections()}
    for k in range(2_000):
        before, after = original.sale(k), corrected.sale(k)
        kind = changed.get(k)
        if kind is None:
            assert after == before
            continue
        assert line_total(after) == Decimal(str(after["total_amount"]))  # kept consistent
        same = {field: before[field] == after[field] for field in before}
        if kind == "customer":
            assert after["customer_id"] != before["customer_id"]
            assert same == {**dict.fromkeys(before, True), "customer_id": False}
        elif kind == "day":
            shift = utc_day(after["datetime"]) - utc_day(before["datetime"])
            assert shift.days in (-2, -1, 1, 2)
            assert same == {**dict.fromkeys(before, True), "datetime": False}
        elif kind == "line_removed":
            assert 1 <= len(after["items"]) == len(before["items"]) - 1
            assert all(item in before["items"] for item in after["items"])
            assert line_total(after) < line_total(before)
        else:
            assert len(after["items"]) == len(before["items"])
            differing = [(b, a) for b, a in zip(before["items"], after["items"], strict=True) if b != a]
            assert len(differing) == 1
            ((b, a),) = differing
            assert a["product_sku"] == b["product_sku"] and a["quantity"] != b["quantity"]
            assert a["amount"] != b["amount"]


def test_corrections_are_served_as_the_generator_computes_them(start_mock) -> None:  # type: ignore[no-untyped-def]
    config = DataConfig(sales=3_000, corrections=12, correction_window=500, invalid_rate=0.02)
    truth = RetailData(config)
    first = start_mock(**vars(config))
    served = all_sales(first)
    assert served == {sale["id"]: sale for sale in map(truth.sale, range(3_000))}
    assert all(c.index >= 2_500 for c in truth.corrections())  # only within the window
    assert len(truth.corrections()) == 12
    second = start_mock(**vars(config))  # deterministic: the same seed, the same corrections
    assert (
        get(second, "/sales", start_sales_id=2_401, limit=600).content
        == get(first, "/sales", start_sales_id=2_401, limit=600).content
    )


def test_a_new_correction_version_adds_a_round_and_can_correct_a_sale_twice() -> None:
    once = RetailData(DataConfig(corrections=8, correction_window=100))
    twice = RetailData(DataConfig(corrections=8, correction_window=100, correction_version=1))
    assert set(once.corrections()) < set(twice.corrections())
    assert {c.round for c in twice.corrections()} == {0, 1}
    per_sale = Counter(c.index for c in twice.corrections())
    corrected_twice = [k for k, n in per_sale.items() if n == 2]
    assert corrected_twice == [9965]  # this seed's two rounds both picked sale index 9965
    assert [c.kind for c in twice.corrections() if c.index == 9965] == ["customer", "day"]
    original, first, second = RetailData(DataConfig()).sale(9965), once.sale(9965), twice.sale(9965)
    assert first["customer_id"] != original["customer_id"]  # round 0: another customer
    assert first["datetime"] == original["datetime"]
    assert second["customer_id"] == first["customer_id"]  # round 1 keeps it and moves the day
    assert utc_day(second["datetime"]) != utc_day(first["datetime"])
    assert second["items"] == first["items"] == original["items"]


def test_admin_corrections_endpoint_corrects_and_says_what(start_mock) -> None:  # type: ignore[no-untyped-def]
    server = start_mock(sales=1_000)
    truth = RetailData(DataConfig(sales=1_000))
    assert httpx.post(server.url + "/_admin/corrections", params={"count": 5}).status_code == 401
    response = httpx.post(
        server.url + "/_admin/corrections",
        params={"count": 6, "window": 50},
        headers={"Authorization": API_KEY},
    )
    assert response.status_code == 200
    expected = truth.correct(6, 50)
    assert response.json() == {"round": 0, "corrected": [{"id": c.sale_id, "kind": c.kind} for c in expected]}
    assert len(expected) == 6 and all(c.sale_id > 950 for c in expected)
    assert {c.kind for c in expected} == {"customer", "day", "line_removed", "quantity"}
    assert all_sales(server) == {sale["id"]: sale for sale in map(truth.sale, range(1_000))}


def test_admin_corrections_before_an_id_correct_only_sales_below_it(start_mock) -> None:  # type: ignore[no-untyped-def]
    server = start_mock(sales=1_000)
    response = httpx.post(
        server.url + "/_admin/corrections",
        params={"count": 8, "window": 40, "before": 501},
        headers={"Authorization": API_KEY},
    )
    assert response.status_code == 200
    ids = [c["id"] for c in response.json()["corrected"]]
    assert len(ids) == 8 and all(461 <= i <= 500 for i in ids)  # the 40 ids below 501
    truth = RetailData(DataConfig(sales=1_000))
    assert [c.sale_id for c in truth.correct(8, 40, end=500)] == ids


def test_delisted_products_and_customers_leave_the_lists_and_come_back(start_mock) -> None:  # type: ignore[no-untyped-def]
    server = start_mock(delisted_products=3, delisted_customers=5)
    truth = RetailData(DataConfig(delisted_products=3, delisted_customers=5))
    skus, total = listed(server, "/products", "product_sku")
    gone = {truth.product(i)["product_sku"] for i in truth.delisted_products()}
    assert total == len(skus) == 197 and len(gone) == 3 and not gone & set(skus)
    assert skus == [truth.product(i)["product_sku"] for i in truth.listed_products()]
    ids, total = listed(server, "/customers", "customer_id")
    assert total == len(ids) == 495
    assert ids == [truth.customer(i)["customer_id"] for i in truth.listed_customers()]
    paged = [
        item["product_sku"]
        for offset in range(0, 197, 70)
        for item in get(server, "/products", limit=70, offset=offset).json()["items"]
    ]
    assert paged == skus  # offset paging walks the listed ones only

    def delist(**counts: int) -> dict[str, list[str]]:
        response = httpx.post(
            server.url + "/_admin/delist", params=counts, headers={"Authorization": API_KEY}
        )
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    more = delist(products=5)
    assert gone < set(more["delisted_products"]) and len(more["delisted_products"]) == 5
    assert len(more["delisted_customers"]) == 5  # customers left as they were
    assert delist(products=0, customers=0) == {"delisted_products": [], "delisted_customers": []}
    assert listed(server, "/products", "product_sku")[1] == 200
    assert listed(server, "/customers", "customer_id")[1] == 500


def test_admin_endpoints_are_never_faulted() -> None:
    client = TestClient(create_app(MockConfig(faults=FaultConfig(fail_rate=1.0), api_key=API_KEY)))
    headers = {"Authorization": API_KEY}
    assert client.get("/products", headers=headers).status_code in (500, 503)
    assert client.post("/_admin/delist", params={"products": 1}, headers=headers).status_code == 200
    assert client.post("/_admin/corrections", params={"count": 1}, headers=headers).status_code == 200


def test_api_serve_options_correct_and_delist() -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retailctl",
            "api",
            "serve",
            "--port",
            str(port),
            "--sales",
            "500",
            "--corrections",
            "4",
            "--correction-window",
            "10",
            "--correction-version",
            "1",
            "--delist-products",
            "2",
            "--delist-customers",
            "7",
            "--api-key",
            API_KEY,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    truth = RetailData(
        DataConfig(
            sales=500,
            corrections=4,
            correction_window=10,
            correction_version=1,
            delisted_products=2,
            delisted_customers=7,
        )
    )

    def page() -> httpx.Response | None:
        try:
            return httpx.get(
                url + "/sales",
                params={"start_sales_id": 491, "limit": 10},
                headers={"Authorization": API_KEY},
            )
        except httpx.ConnectError:
            return None  # not listening yet

    try:
        response = wait_until(page, 10, "the server to answer", alive=server)
        assert response.json()["items"] == [truth.sale(k) for k in range(490, 500)]
        assert len({c.index for c in truth.corrections()}) >= 4
        assert all(c.index >= 490 for c in truth.corrections())
        for path, total in (("/products", 198), ("/customers", 493)):
            assert httpx.get(url + path, headers={"Authorization": API_KEY}).json()["total_items"] == total
    finally:
        server.terminate()
        server.wait(10)
