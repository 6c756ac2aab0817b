"""verify's look at the source: does its `total_items` match the sales retailctl holds?

`total_items` counts every sale the source has. retailctl holds each one it read, valid in
silver or invalid in bronze/_rejected, and has yet to read those from the cursor on. So
`total_items` must equal: silver's sales below the cursor + the rejected ids below it that
silver lacks + the source's sales from the cursor on, counted by paging from the cursor
(cheap after a recent extract; past MAX_PAGES pages it is not checked). A source that cannot
be asked is reported, never fatal: the layers' check stands without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import httpx
import orjson
import psycopg

from retailctl.config import Settings
from retailctl.store import state

MAX_PAGES = 20
SILVER_BELOW = "select count(*) from silver.sales_customer where id < %s"
REJECTED_NOT_IN_SILVER = """
select count(*) from unnest(%s::bigint[]) as rejected(id)
where rejected.id < %s
  and not exists (select from silver.sales_customer as sales where sales.id = rejected.id)
"""


@dataclass
class SourceCheck:
    status: str  # agree, differ, not checked
    detail: str
    total_items: int | None = None
    silver: int | None = None
    rejected: int | None = None
    not_extracted: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotChecked(Exception):
    """The source could not say how many sales it has; the message says why."""


def check(conn: psycopg.Connection, settings: Settings, rejected_ids: set[int]) -> SourceCheck:
    """The source's `total_items` against what retailctl holds (see the module docstring)."""
    if settings.api_url is None or settings.api_key is None:
        missing = "RETAIL_API_URL" if settings.api_url is None else "RETAIL_API_KEY"
        return SourceCheck("not checked", f"{missing} is not set")
    cursor = state.read_cursor(conn).next_sales_id
    try:
        total, pending = count_from(settings, cursor)
    except NotChecked as exc:
        return SourceCheck("not checked", str(exc))
    silver = conn.execute(SILVER_BELOW, (cursor,)).fetchone()[0]  # type: ignore[index]
    rejected = conn.execute(
        REJECTED_NOT_IN_SILVER,  # type: ignore[index]
        (sorted(rejected_ids), cursor),
    ).fetchone()[0]
    held = silver + rejected + pending
    parts = f"{silver} in silver + {rejected} rejected + {pending} not extracted yet"
    if total == held:
        return SourceCheck("agree", f"total_items {total} = {parts}", total, silver, rejected, pending)
    return SourceCheck("differ", f"total_items {total} != {held} = {parts}", total, silver, rejected, pending)


def count_from(settings: Settings, cursor: int) -> tuple[int, int]:
    """(total_items, sales with an id from `cursor` on), paging /sales from the cursor."""
    assert settings.api_url is not None and settings.api_key is not None
    limit = settings.page_size
    with httpx.Client(
        base_url=settings.api_url,
        headers={"Authorization": settings.api_key},
        timeout=httpx.Timeout(settings.http_timeout),
    ) as client:
        start, pending = cursor, 0
        for _ in range(MAX_PAGES):
            items, total = _page(client, start, limit)
            ids = [i for i in (_id_of(item) for item in items) if i is not None and i >= start]
            pending += len(ids)
            if not ids or len(items) < limit:
                return total, pending
            start = max(ids) + 1
    raise NotChecked(
        f"more than {MAX_PAGES * limit} sales past the cursor (next id {cursor}): run extract first"
    )


def _page(client: httpx.Client, start: int, limit: int) -> tuple[list[Any], int]:
    try:
        response = client.get("/sales", params={"start_sales_id": start, "limit": limit})
    except httpx.TransportError as exc:
        raise NotChecked(f"source unreachable ({type(exc).__name__}: {exc})") from None
    if response.status_code in (401, 403):
        raise NotChecked(f"the API key was rejected (HTTP {response.status_code})")
    if response.status_code != 200:
        raise NotChecked(f"GET /sales answered HTTP {response.status_code}")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise NotChecked("GET /sales answered a body that is not JSON") from None
    items = body.get("items") if isinstance(body, dict) else None
    total = body.get("total_items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not isinstance(total, int) or isinstance(total, bool):
        raise NotChecked("the source does not report total_items")
    return items, total


def _id_of(item: Any) -> int | None:
    sale_id = item.get("id") if isinstance(item, dict) else None
    return sale_id if isinstance(sale_id, int) and not isinstance(sale_id, bool) else None
