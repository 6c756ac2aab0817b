"""The bundled mock API: contract, auth, determinism, scale and fault injection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mock_api import BackgroundServer, DataConfig, FaultConfig, MockConfig, create_app
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


@pytest.mark.parametrize(("path", "key"), [("/products", "product_sku"),
                                           ("/customers", "customer_id")])
def test_offset_paging_reaches_exactly_total_items(mock_api: BackgroundServer, path: str,
                                                   key: str) -> None:
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
    products = {p["product_sku"]: Decimal(str(p["unit_amount"]))
                for p in get(mock_api, "/products", limit=1000).json()["items"]}
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
            pages.append([get(server, path, limit=300).content
                          for path in ("/sales", "/customers", "/products")])
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
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "retailctl", "api", "serve", "--port", str(port), *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
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
    response = wait_until(lambda: first_answer(f"http://127.0.0.1:{port}/sales",
                                                {"start_sales_id": 999_001, "limit": 1000}),
                          30, "the server to answer", alive=server, interval=0.02)
    used = cpu_seconds(server.pid)
    body = response.json()
    assert body["total_items"] == 1_000_000
    assert [s["id"] for s in body["items"]] == list(range(999_001, 1_000_001))
    assert used < 2.0, f"first page of a 1M-sale source after {used:.2f}s of CPU"


def test_faults_appear_at_the_configured_rates() -> None:
    faults = FaultConfig(fail_rate=0.2, throttle_rate=0.1)
    client = TestClient(create_app(MockConfig(faults=faults, api_key=API_KEY)))  # in-process
    statuses = [client.get("/products", params={"limit": 1},
                           headers={"Authorization": API_KEY}).status_code for _ in range(1000)]
    throttled = [s for s in statuses if s == 429]
    failed = [s for s in statuses if s in (500, 503)]
    assert 0.07 < len(throttled) / 1000 < 0.13
    assert 0.16 < len(failed) / 1000 < 0.24
    assert {500, 503} <= set(failed)
    assert len(throttled) + len(failed) + statuses.count(200) == 1000
    response = next(r for r in (client.get("/sales", headers={"Authorization": API_KEY})
                                for _ in range(200)) if r.status_code == 429)
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
        return client.get("/sales", params={"start_sales_id": 101, "limit": 10},
                          headers={"Authorization": API_KEY}).json()

    first = client.get("/sales", headers={"Authorization": API_KEY}).json()["total_items"]
    body = wait_until(lambda: (page := sales_from_101())["total_items"] >= 103 and page, 10,
                      "three live sales (10 a second)")
    assert first >= 100
    assert body["total_items"] >= 103
    assert body["items"][0]["id"] == 101
