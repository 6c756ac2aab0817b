"""Sales: incremental from the cursor, losing nothing.

Sales are read from `meta.ingestion_state` in chunks of a few pages: a chunk's files are made
durable first, then the cursor moves past them in one transaction, so a crash loses at most
the chunk in flight and the next run reads it again. Bronze may hold a sale twice; it never
misses one. The next page is fetched on a thread while the current one is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from retailctl.errors import ContractViolation, RetailctlError
from retailctl.extract import records
from retailctl.extract.batch import Batch
from retailctl.extract.result import EntityResult, log_result
from retailctl.extract.source import SourceClient
from retailctl.prefetch import prefetch
from retailctl.store import state

PAGES_PER_CHUNK = 8

# entity, records read so far (rejected included), pages so far, and the expected total
# where the API's total_items allows an estimate
Progress = Callable[[str, int, int, int | None], None]
Warn = Callable[[str], None]


@dataclass(frozen=True)
class _Page:
    sales: list[Any]  # at or after the start, and those without a valid id (to be rejected)
    next_start: int
    out_of_order: int  # sales with an id below an earlier one of the page
    total_items: int | None  # all sales the source says it has, for the progress estimate


def read_sales(source: SourceClient, conn: psycopg.Connection, bronze_dir: Path, *, limit: int,
               max_sales: int = 0, from_id: int | None = None, progress: Progress,
               warn: Warn) -> EntityResult:
    """Read sales from the cursor (or `from_id`, a backfill) to the end of the source or
    `max_sales`; `conn` is in autocommit mode.

    The cursor moves only over ids this run read: a backfill from beyond the cursor leaves it
    where it is. A source answer that breaks the contract ends the entity (`result.error`),
    keeping the pages read before it.
    """
    started = time.monotonic()
    cursor = state.read_cursor(conn).next_sales_id
    start = from_id if from_id is not None else cursor
    moves_cursor = start <= cursor
    result = EntityResult("sales", cursor_from=start, cursor_to=start)

    def note(message: str) -> None:
        result.warnings.append(message)
        warn(message)

    if from_id is not None and moves_cursor:
        note(f"backfill: reading sales from id {from_id} (the cursor stays at {max(cursor, 1)} "
             "or beyond)")
    elif from_id is not None:
        note(f"backfill: reading sales from id {from_id}, beyond the cursor: the cursor stays at "
             f"{cursor} (ids {cursor} to {from_id - 1} are not read yet)")
    batch = Batch(bronze_dir)
    pages_in_batch = 0
    try:
        for page in prefetch(_pages(source, start, limit, max_sales, note)):
            for sale in page.sales:
                _write_sale(batch, sale, result)
            result.pages += 1
            result.out_of_order += page.out_of_order
            result.cursor_to = page.next_start
            read = result.records + result.rejected
            progress("sales", read, result.pages,
                     expected_sales(page.total_items, start, read, max_sales))
            pages_in_batch += 1
            if pages_in_batch >= PAGES_PER_CHUNK:
                _commit_chunk(conn, batch, result, moves_cursor)
                batch, pages_in_batch = Batch(bronze_dir), 0
        _commit_chunk(conn, batch, result, moves_cursor)
    except ContractViolation as exc:  # this entity fails; the pages read before it are kept
        _commit_chunk(conn, batch, result, moves_cursor)
        result.error = str(exc)
    except RetailctlError:
        _commit_chunk(conn, batch, result, moves_cursor)  # keep the pages read before the failure
        raise
    except BaseException:
        batch.abort()
        raise
    with conn.transaction():
        log_result(conn, result)
    result.seconds = time.monotonic() - started
    return result


def expected_sales(total_items: int | None, start: int, read: int, max_sales: int) -> int | None:
    """How many sales this run will read, estimated from `total_items` (all sales the source
    has) as if ids ran densely from 1: a guess for progress, never for the cursor."""
    if total_items is None:
        return None
    expected = max(total_items - (start - 1), read)
    return min(expected, max_sales) if max_sales else expected


def _pages(source: SourceClient, start: int, limit: int, max_sales: int,
           note: Warn) -> Iterator[_Page]:
    """Each page's sales at or after the start, until the end, the cap, or a page that does
    not advance. Runs on the prefetch thread."""
    taken = 0
    while True:
        remaining = max_sales - taken if max_sales else None
        if remaining == 0:
            return
        page = source.page("/sales", {"start_sales_id": start, "limit": limit})
        items = page.items[:remaining] if remaining is not None else page.items
        served = [records.sale_id_of(s) for s in items]  # None: no valid id
        # Sales before the start were read already; one without a valid id is kept, to be
        # rejected with its reason.
        fresh = [s for s, sale_id in zip(items, served, strict=True)
                 if sale_id is None or sale_id >= start]
        ids = [sale_id for sale_id in served if sale_id is not None and sale_id >= start]
        if not page.items:
            return
        if not ids:
            note(f"/sales?start_sales_id={start} returned no sale at or after that id; paging "
                 "does not advance, stopping there")
            if fresh:
                yield _Page(fresh, start, 0, page.total_items)  # sales without a valid id: rejected
            return
        taken += len(fresh)
        start = max(ids) + 1
        yield _Page(fresh, start, _out_of_order(ids), page.total_items)
        if len(page.items) < source.effective_limit(limit):  # the limit the page was read with
            return


def _out_of_order(ids: list[int]) -> int:
    highest, count = 0, 0
    for sale_id in ids:
        count += sale_id < highest
        highest = max(highest, sale_id)
    return count


def _write_sale(batch: Batch, sale: Any, result: EntityResult) -> None:
    reason = records.sale_reject_reason(sale)
    if reason:
        batch.reject("sales", sale, reason)
        result.rejected += 1
        return
    header, lines = records.split_sale(sale, batch.stamp)
    batch.file("sales_customer").write(header)
    lines_file = batch.file("sales_product")
    for line in lines:
        lines_file.write(line)
    result.records += 1
    result.lines += len(lines)
    if records.is_inconsistent(sale):
        result.inconsistent += 1


def _commit_chunk(conn: psycopg.Connection, batch: Batch, result: EntityResult,
                  moves_cursor: bool) -> None:
    """Files first, durable; then the cursor past them (unless ids before them are unread)."""
    next_id = result.cursor_to
    assert next_id is not None
    result.files += batch.commit()
    if not moves_cursor:
        return
    note = (f"extract at {batch.moment:%Y-%m-%d %H:%M:%S}Z: {result.records} sales read "
            f"from id {result.cursor_from}, next id {next_id}")
    with conn.transaction():
        state.advance_cursor(conn, next_id, note)
