"""The bundled retail API: the original project's mock API contract, plus fault injection.

Beyond the contract, two admin endpoints (same API key) let a demo or a test that keeps one
server running make the source change its past: `POST /_admin/corrections?count=K&window=N`
corrects K published sales (among the last N, or any; `&before=ID`: below that id),
`POST /_admin/delist?products=N&customers=M` delists exactly that many (0 relists all). Both
answer what they did.
"""

from __future__ import annotations

import asyncio
import hmac
import random
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request, Response
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Receive, Scope, Send

from mock_api.data import DataConfig, RetailData

DEFAULT_API_KEY = "FAKE_KEY_123"
MAX_LIMIT = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Records per page, 1 to 1000.")]
Offset = Annotated[int, Query(ge=0, description="Records to skip.")]
StartSalesId = Annotated[int, Query(ge=0, description="The first sale id to return.")]
ADMIN_PREFIX = "/_admin/"
ADMIN_TAG = "admin (not part of the source contract)"
# The interactive docs, served from the package (no CDN: they work without internet), and
# the health check: open to everyone, never failed on purpose.
DOCS_ASSETS = "/docs-assets"
PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/health"})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(f"{DOCS_ASSETS}/")


@dataclass(frozen=True)
class FaultConfig:
    fail_rate: float = 0.0  # share of requests answered 500 or 503
    throttle_rate: float = 0.0  # share answered 429 with Retry-After
    latency_ms: int = 0  # added to every request
    retry_after_s: int = 1


@dataclass(frozen=True)
class MockConfig:
    data: DataConfig = field(default_factory=DataConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    api_key: str = DEFAULT_API_KEY


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json"
    )


class FaultInjection:
    """ASGI middleware: latency, throttling and server errors at the configured rates."""

    def __init__(self, app: ASGIApp, faults: FaultConfig, seed: int) -> None:
        self.app = app
        self.faults = faults
        self.rng = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http" or is_public(scope["path"]) or scope["path"].startswith(ADMIN_PREFIX)
        ):  # a test's own controls never fail
            await self.app(scope, receive, send)
            return
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        roll = self.rng.random()
        if roll < faults.throttle_rate:
            response = json_response(
                {"detail": "Too Many Requests"}, 429, {"Retry-After": str(faults.retry_after_s)}
            )
        elif roll < faults.throttle_rate + faults.fail_rate:
            status = self.rng.choice((500, 503))
            response = json_response({"detail": "Injected failure"}, status)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def create_app(config: MockConfig | None = None) -> FastAPI:
    config = config or MockConfig()
    data = RetailData(config.data)
    expected = config.api_key.encode()
    app = FastAPIOffline(
        title="retailctl mock retail API",
        version="1.0",
        description="Deterministic demo data in the original project's API contract.",
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )

    @app.middleware("http")
    async def require_key(request: Request, call_next: Any) -> Response:
        if is_public(request.url.path):
            return await call_next(request)  # type: ignore[no-any-return]
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected):
            return json_response({"detail": "Unauthorized"}, 401)
        return await call_next(request)  # type: ignore[no-any-return]

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/products")
    async def products(limit: Limit = 100, offset: Offset = 0) -> Response:
        listed = data.listed_products()
        items = [data.product(i) for i in listed[offset : offset + limit]]
        return json_response({"items": items, "total_items": len(listed)})

    @app.get("/customers")
    async def customers(limit: Limit = 100, offset: Offset = 0) -> Response:
        listed = data.listed_customers()
        items = [data.customer(i) for i in listed[offset : offset + limit]]
        return json_response({"items": items, "total_items": len(listed)})

    @app.get("/sales")
    async def sales(limit: Limit = 100, start_sales_id: StartSalesId = 1) -> Response:
        total = data.sale_count()
        first = data.first_index_at_or_after(start_sales_id, total)
        items = [data.sale(k) for k in range(first, min(first + limit, total))]
        return json_response({"items": items, "total_items": total})

    @app.post(ADMIN_PREFIX + "corrections", tags=[ADMIN_TAG])
    async def corrections(
        count: Annotated[int, Query(ge=0, description="Sales to correct.")],
        window: Annotated[int | None, Query(ge=1, description="Only among the last N sales.")] = None,
        before: Annotated[
            int | None, Query(ge=1, description="Only among sales with an id below this (a client's cursor).")
        ] = None,
    ) -> Response:
        """Correct `count` published sales: another customer, another day, a line removed or
        a quantity changed, in turn. `before` makes "published" mean "already read by a client
        whose cursor is there", for a server serving more sales than the client has read."""
        total = data.sale_count()
        end = data.first_index_at_or_after(before, total) if before is not None else total
        done = data.correct(count, window, end=end)
        return json_response(
            {"round": data.rounds - 1, "corrected": [{"id": c.sale_id, "kind": c.kind} for c in done]}
        )

    @app.post(ADMIN_PREFIX + "delist", tags=[ADMIN_TAG])
    async def delist(
        products: Annotated[int | None, Query(ge=0, description="Products delisted (0 = none).")] = None,
        customers: Annotated[int | None, Query(ge=0, description="Customers delisted (0 = none).")] = None,
    ) -> Response:
        """Delist exactly this many products and customers (a seeded choice; 0 relists all)."""
        data.delist(products=products, customers=customers)
        return json_response(
            {
                "delisted_products": [data.product(i)["product_sku"] for i in data.delisted_products()],
                "delisted_customers": [data.customer(i)["customer_id"] for i in data.delisted_customers()],
            }
        )

    if config.faults != FaultConfig():
        app.add_middleware(FaultInjection, faults=config.faults, seed=config.data.seed)
    return app
