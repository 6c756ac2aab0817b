"""A real HTTP server on loopback that misbehaves on cue, for what the mock API cannot show.

Pages come from the mock's own data generator; a `script` decides, per request, whether to
answer normally, slowly, with garbage, byte by byte (`trickle_s`), compressed (a `headers`
Content-Encoding over a body given already encoded), or like the original project's API.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from mock_api import DataConfig, RetailData
from tests.helpers import API_KEY


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: the normal page
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    trickle_s: float = 0.0  # > 0: the whole response (status line on) one byte per this many s


@dataclass
class Request:
    path: str
    params: dict[str, int]
    number: int  # 1-based count of requests to this path


Script = Callable[[Request], Reply | None]


class Gate:
    """Holds the requests a script hands it until the test opens it.

    While a request is held, the client is known to be waiting on HTTP, between two pages:
    the state a kill or signal test waits for (`held`) before it acts.
    """

    def __init__(self) -> None:
        self.held = threading.Event()
        self._opened = threading.Event()

    def hold(self, timeout: float = 120) -> None:
        self.held.set()
        self._opened.wait(timeout)

    def open(self) -> None:
        self._opened.set()


def normal_page(
    data: RetailData, path: str, params: dict[str, int], *, max_limit: int = 1000, honour_offset: bool = True
) -> tuple[int, bytes]:
    limit = params.get("limit", 100)
    if not 1 <= limit <= max_limit:
        return 422, b'{"detail": "limit out of range"}'
    offset = params.get("offset", 0) if honour_offset else 0
    if path == "/sales":
        total = data.sale_count()
        first = data.first_index_at_or_after(params.get("start_sales_id", 1), total)
        items = [data.sale(k) for k in range(first, min(first + limit, total))]
    elif path == "/customers":
        total = data.customer_count()
        items = [data.customer(i) for i in range(offset, min(offset + limit, total))]
    elif path == "/products":
        total = data.product_count()
        items = [data.product(i) for i in range(offset, min(offset + limit, total))]
    else:
        return 404, b'{"detail": "Not Found"}'
    return 200, orjson.dumps({"items": items, "total_items": total})


class ScriptedApi:
    def __init__(
        self,
        script: Script,
        data: DataConfig | None = None,
        *,
        max_limit: int = 1000,
        honour_offset: bool = True,
    ) -> None:
        self.data = RetailData(data or DataConfig())
        self.script = script
        self.counts: dict[str, int] = {}
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = {k: int(v[0]) for k, v in parse_qs(parts.query).items()}
                with lock:
                    api.counts[parts.path] = api.counts.get(parts.path, 0) + 1
                    request = Request(parts.path, params, api.counts[parts.path])
                    api.requests.append(request)
                given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                reply = api.script(request) or Reply()
                if given != API_KEY:
                    reply = Reply(status=401, body=b'{"detail": "Unauthorized"}')
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                status, body = reply.status, reply.body
                if body is None:
                    status, body = normal_page(
                        api.data, parts.path, params, max_limit=max_limit, honour_offset=honour_offset
                    )
                try:
                    if reply.trickle_s:
                        self._trickle(status, body, reply)
                        return
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): as a real server would see it

            def _trickle(self, status: int, body: bytes, reply: Reply) -> None:
                """A slowloris answer: every byte in time for any per-read timeout."""
                head = [
                    f"HTTP/1.1 {status} OK",
                    "Content-Type: application/json",
                    f"Content-Length: {len(body)}",
                    *(f"{name}: {value}" for name, value in reply.headers.items()),
                ]
                data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
                for index in range(len(data)):
                    if api.stopping.is_set():
                        return
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                    time.sleep(reply.trickle_s)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def fixed_page(items: list[Any], request: Request) -> Reply:
    """A page of a fixed list of records, as the contract pages: /sales from start_sales_id
    (in the list's order, which may be out of order), the others by offset. Encoded by the
    standard library, so that ints of any size and \\u escapes (NUL) go out as given."""
    limit = request.params.get("limit", 100)
    if request.path == "/sales":
        start = request.params.get("start_sales_id", 1)
        page = [item for item in items if item["id"] >= start][:limit]
    else:
        offset = request.params.get("offset", 0)
        page = items[offset : offset + limit]
    return Reply(body=json.dumps({"items": page, "total_items": len(items)}).encode())
