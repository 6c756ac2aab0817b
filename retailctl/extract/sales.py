"""Sales: incremental from the cursor, losing nothing, re-reading the last few for corrections.

Sales are read from `meta.ingestion_state` in chunks of a few pages: a chunk's files are made
durable first, then the cursor moves past them in one transaction, so a crash loses at most
the chunk in flight and the next run reads it again. Bronze may hold a sale twice; it never
misses one. The next page is fetched on a thread while the current one is written; the pages
below the cursor, whose starts are known, are requested several at once (`_Window`).

Each run starts `lookback` ids before the cursor, so a sale the source corrected soon after
publishing it is read again; a re-read sale whose content hash (meta.sale_hashes) is unchanged
is not written: an idle hour writes no file and costs Gold nothing. A sale is written whole into
one batch (its header and every line): load replaces the previous version with it. Re-read
sales go to a batch of their own, apart from the new ones, whose files load COPYs straight in.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from retailctl.bronze_store import BronzeStore
from retailctl.errors import ContractViolation, RetailctlError
from retailctl.extract import records
from retailctl.extract.batch import Batch
from retailctl.extract.result import EntityResult, log_result
from retailctl.prefetch import ordered_map, prefetch
from retailctl.store import state

if TYPE_CHECKING:
    from retailctl.extract.source import Page, SourceClient

PAGES_PER_CHUNK = 8
# requests in flight at once for the lookback window's pages (a polite number for one source)
WINDOW_REQUESTS = 4
# a long backfill vacuums meta.sale_hashes every this many rows pruned (and every run at its end)
VACUUM_AFTER_PRUNED = 100_000

# entity, records read so far (rejected included), pages so far, and the expected total
# where the API's total_items allows an estimate
Progress = Callable[[str, int, int, int | None], None]
Warn = Callable[[str], None]
# Told, early and maybe more than once, that this run brings sales past the cursor.
NewSales = Callable[[], None]
# Told after each chunk's files are durable and the cursor is past them: they can be loaded.
Committed = Callable[[], None]


@dataclass(frozen=True)
class _Page:
    sales: list[Any]  # at or after the start, and those without a valid id (to be rejected)
    next_start: int
    out_of_order: int  # sales with an id below an earlier one of the page
    total_items: int | None  # what the source says it has: for progress only


def read_sales(
    source: SourceClient,
    conn: psycopg.Connection,
    bronze: BronzeStore,
    *,
    limit: int,
    max_sales: int = 0,
    from_id: int | None = None,
    to_id: int | None = None,
    lookback: int = 0,
    progress: Progress,
    warn: Warn,
    new_sales: NewSales | None = None,
    committed: Committed | None = None,
) -> EntityResult:
    """Read sales from `lookback` ids before the cursor (or from `from_id`, a backfill, up to
    `to_id`) to the end of the source or `max_sales`; `conn` is in autocommit mode.
    `new_sales` hears, from the first page on, that the source holds more sales than the
    cursor has passed (its total_items), or that a sale was written: what follows will load.
    `committed` hears each chunk made durable (a load beside this extract can take it).

    The cursor moves only over ids this run read, never back: a backfill from beyond the
    cursor leaves it where it is. A source answer that breaks the contract ends the entity
    (`result.error`), keeping the pages read before it.
    """
    started = time.monotonic()
    cursor = state.read_cursor(conn).next_sales_id
    start = from_id if from_id is not None else max(1, cursor - lookback)
    moves_cursor = start <= cursor
    shown = start if from_id is not None else cursor  # the summary shows the cursor's move
    result = EntityResult("sales", cursor_from=shown, cursor_to=shown)
    hashes = _Hashes(conn, lookback)

    def note(message: str) -> None:
        result.warnings.append(message)
        warn(message)

    if from_id is not None and moves_cursor:
        note(f"backfill: reading sales from id {from_id} (the cursor stays at {max(cursor, 1)} or beyond)")
    elif from_id is not None:
        note(
            f"backfill: reading sales from id {from_id}, beyond the cursor: the cursor stays at "
            f"{cursor} (ids {cursor} to {from_id - 1} are not read yet)"
        )
    batch = _Chunk(bronze, cursor)
    pages_in_batch = 0
    try:
        for page in prefetch(_pages(source, start, limit, max_sales, to_id, cursor, note)):
            if new_sales and (result.records or (page.total_items or 0) >= cursor):
                new_sales()
            known = hashes.known(page.sales)
            for sale in page.sales:
                if hashes.unchanged(sale, known):
                    result.unchanged += 1
                    continue
                _write_sale(batch.batch_for(sale), sale, result)
            result.pages += 1
            result.out_of_order += page.out_of_order
            result.cursor_to = page.next_start
            read = result.records + result.rejected + result.unchanged
            progress("sales", read, result.pages, expected_sales(page.total_items, start, read, max_sales))
            pages_in_batch += 1
            if pages_in_batch >= PAGES_PER_CHUNK:
                _commit_chunk(conn, batch, result, moves_cursor, hashes)
                batch, pages_in_batch = _Chunk(bronze, cursor), 0
                if committed:
                    committed()
        _commit_chunk(conn, batch, result, moves_cursor, hashes)
        hashes.vacuum()
    except ContractViolation as exc:  # this entity fails; the pages read before it are kept
        _commit_chunk(conn, batch, result, moves_cursor, hashes)
        result.error = str(exc)
    except RetailctlError:
        # keep the pages read before the failure
        _commit_chunk(conn, batch, result, moves_cursor, hashes)
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


def _pages(
    source: SourceClient, start: int, limit: int, max_sales: int, to_id: int | None, cursor: int, note: Warn
) -> Iterator[_Page]:
    """Each page's sales at or after the start (and up to `to_id`), until the end (an empty
    page, or none past the start), the cap, `to_id`, or a page that does not advance. Runs on
    the prefetch thread.

    The cap counts the sales at or past the cursor only: re-reading the lookback window must
    never use it up (the cursor would never move again)."""
    if to_id is None and start < cursor:  # ids below the cursor (the lookback): requested together
        window = _Window(source, start, cursor, limit, note)
        yield from window
        if window.ended:
            return
        start, first, after_short = cursor, window.after, window.last_short
    else:
        first, after_short = None, False
    taken = 0
    while True:
        remaining = max_sales - taken if max_sales else None
        if remaining == 0:
            return
        page = first or source.page("/sales", {"start_sales_id": start, "limit": limit})
        first = None
        items, counted = _within_cap(page.items, remaining, cursor)
        past_end = False
        if to_id is not None:  # stop past M: the sales after it are not this backfill's
            kept = [s for s in items if (records.sale_id_of(s) or 0) <= to_id]
            past_end, items = len(kept) < len(items), kept
        served = [records.sale_id_of(s) for s in items]  # None: no valid id
        # Sales before the start were read already; one without a valid id is kept, to be
        # rejected with its reason.
        fresh = [s for s, sale_id in zip(items, served, strict=True) if sale_id is None or sale_id >= start]
        ids = [sale_id for sale_id in served if sale_id is not None and sale_id >= start]
        if not page.items or (past_end and not ids):
            return
        if not ids:
            if last := _nothing_past(page, start, fresh, after_short, note):
                yield last
            return
        taken += counted
        start = max(ids) + 1
        yield _Page(fresh, start, _out_of_order(ids), page.total_items)
        if past_end:
            return
        # A page shorter than asked is not the end: the contract says "at most L", and a source
        # may cap its pages below what it accepts. The end is an empty page, or one with nothing
        # past the start: after a short page (which held every sale from its start on, records
        # without a usable id included) or where total_items says so (the original API's).
        after_short = len(page.items) < source.effective_limit(limit)


class _Window:
    """The pages of the lookback window, ids [start, cursor), requested WINDOW_REQUESTS at a
    time: the source has served these ids before, so where each page starts is known without
    the page before it (sequential paging starts each page past the previous one's last id).
    An hour with nothing new waits about one round trip for the window instead of one per
    page. Each page keeps the ids of its own slice, [low, low + limit): with unique integer
    ids, a full page of `limit` sales covers its slice, and one that stops short of the slice's
    end (a source answering fewer than asked, or one that lowered the limit) is continued
    sequentially from its last id.

    The first page from the cursor on is requested with the window's (`after`: where the
    sequential paging starts). `ended` is set if the window showed the source has nothing past
    it (an empty page, or none past a slice's start): paging on would find nothing."""

    def __init__(self, source: SourceClient, start: int, cursor: int, limit: int, note: Warn) -> None:
        self.source, self.limit, self.note = source, limit, note
        self.start, self.cursor = start, cursor
        self.ended = False
        self.after: Page | None = None
        self.last_short = False  # the window's last page was shorter than asked

    def slices(self) -> Iterator[tuple[int, int | None]]:
        """Each page's slice of the window, then the cursor's page (no end: sequential)."""
        width = self.source.effective_limit(self.limit)
        window = ((low, min(low + width, self.cursor)) for low in range(self.start, self.cursor, width))
        return itertools.chain(window, [(self.cursor, None)])

    def __iter__(self) -> Iterator[_Page]:
        answers = ordered_map(self._first_page, self.slices(), WINDOW_REQUESTS)
        try:
            for (low, high), page in zip(self.slices(), answers, strict=True):
                if high is None:
                    self.after = page
                    return
                after_short = False
                while (kept := self._slice_page(page, low, high, after_short)) is not None:
                    yield kept
                    self.last_short = after_short = len(page.items) < self.source.effective_limit(self.limit)
                    if self.ended or kept.next_start >= high:
                        break
                    low = kept.next_start  # the page stopped short of its slice's end
                    page = self.source.page("/sales", {"start_sales_id": low, "limit": self.limit})
                if self.ended:
                    return
        finally:
            answers.close()

    def _first_page(self, bounds: tuple[int, int | None]) -> Page:
        return self.source.page("/sales", {"start_sales_id": bounds[0], "limit": self.limit})

    def _slice_page(self, page: Page, low: int, high: int, after_short: bool) -> _Page | None:
        """The page's sales in [low, high) (and those without a valid id, to be rejected), and
        where the slice goes on; None, with `ended` set, where paging would stop (as `_pages`
        stops; `after_short`: the slice's page before this one was shorter than asked)."""
        if not page.items:
            self.ended = True
            return None
        served = [records.sale_id_of(s) for s in page.items]
        if not any(sale_id is not None and sale_id >= low for sale_id in served):
            self.ended = True
            fresh = [s for s, sale_id in zip(page.items, served, strict=True) if sale_id is None]
            return _nothing_past(page, low, fresh, after_short, self.note)
        inside = [
            (s, sale_id)
            for s, sale_id in zip(page.items, served, strict=True)
            if sale_id is None or low <= sale_id < high
        ]
        ids = [sale_id for _, sale_id in inside if sale_id is not None]
        highest = max(sale_id for sale_id in served if sale_id is not None)
        next_start = high if highest >= high else highest + 1
        return _Page([s for s, _ in inside], next_start, _out_of_order(ids), page.total_items)


def _nothing_past(page: Page, start: int, fresh: list[Any], after_short: bool, note: Warn) -> _Page | None:
    """A page with no sale at or after `start` ends the paging: quietly after a short page
    (which held every sale from its start on) or at the original API's end; otherwise with a
    warning. Its records without a valid id (`fresh`) are kept to be rejected, unless already
    read with the short page."""
    if after_short or (not fresh and _past_the_end(page, start)):
        return None
    note(_does_not_advance(start))
    return _Page(fresh, start, 0, page.total_items) if fresh else None  # rejected, with why


def _past_the_end(page: Page, start: int) -> bool:
    """The original API answers past its end with its last page again: no sale at or after
    `start`, the page ending at `start - 1` (where the paging stopped), and `total_items`
    (how many it has) no more than that. A source ignoring `start` serves another page."""
    ids = [sale_id for sale_id in map(records.sale_id_of, page.items) if sale_id is not None]
    return page.total_items is not None and page.total_items < start and max(ids, default=0) == start - 1


def _does_not_advance(start: int) -> str:
    return (
        f"/sales?start_sales_id={start} returned no sale at or after that id; paging does not "
        "advance, stopping there"
    )


def _within_cap(items: list[Any], remaining: int | None, cursor: int) -> tuple[list[Any], int]:
    """The page cut after `remaining` sales at or past the cursor (or without a valid id), and
    how many of those it holds."""
    counted = 0
    for index, sale in enumerate(items):
        sale_id = records.sale_id_of(sale)
        if sale_id is None or sale_id >= cursor:
            if counted == remaining:
                return items[:index], counted
            counted += 1
    return items, counted


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


class _Chunk:
    """A chunk's sales in two batches: those re-read from before the cursor (corrections: load
    replaces their previous versions) apart from the new ones, so that a file of new sales
    starts past silver's highest key and load COPYs it straight in."""

    def __init__(self, bronze: BronzeStore, cursor: int) -> None:
        self.cursor = cursor
        self.new = Batch(bronze)
        self.reread = Batch(bronze)
        self.moment = self.new.moment

    def batch_for(self, sale: Any) -> Batch:
        sale_id = records.sale_id_of(sale)
        return self.reread if sale_id is not None and sale_id < self.cursor else self.new

    def commit(self) -> list[str]:
        """Both batches durable (a crash between them: the cursor has not moved, so the next
        run reads the chunk again)."""
        return self.reread.commit() + self.new.commit()

    def abort(self) -> None:
        self.reread.abort()
        self.new.abort()


def _commit_chunk(
    conn: psycopg.Connection, batch: _Chunk, result: EntityResult, moves_cursor: bool, hashes: _Hashes
) -> None:
    """Files first, durable; then, in one transaction, the cursor past them (unless ids before
    them are unread) and the content hashes of the sales they hold."""
    next_id = result.cursor_to
    assert next_id is not None
    result.files += batch.commit()
    note = (
        f"extract at {batch.moment:%Y-%m-%d %H:%M:%S}Z: {result.records} sales read "
        f"from id {result.cursor_from}, next id {next_id}"
    )
    with conn.transaction():
        if moves_cursor:
            state.advance_cursor(conn, next_id, note)
        hashes.save()
    hashes.vacuum(at_least=VACUUM_AFTER_PRUNED)


class _Hashes:
    """The content hashes of recently read sales: a re-read sale that did not change is not
    written again. Off (nothing read or recorded) when the lookback is 0."""

    def __init__(self, conn: psycopg.Connection, lookback: int) -> None:
        self.conn = conn
        self.lookback = lookback
        self.pending: dict[int, bytes] = {}  # read this chunk: recorded once its files are durable
        self.pruned_below = 0  # where this run's last prune stopped
        self.pruned = 0  # rows deleted since the last vacuum

    def known(self, sales: list[Any]) -> dict[int, bytes]:
        """The recorded hashes of a page's sales (one query per page)."""
        if not self.lookback:
            return {}
        ids = [sale_id for sale_id in map(records.sale_id_of, sales) if sale_id is not None]
        return state.sale_hashes(self.conn, ids) if ids else {}

    def unchanged(self, sale: Any, known: dict[int, bytes]) -> bool:
        """Is this sale exactly as last read? If not, it is to be written and recorded."""
        sale_id = records.sale_id_of(sale)
        if not self.lookback or sale_id is None:
            return False
        try:
            digest = hashlib.sha256(orjson.dumps(sale, option=orjson.OPT_SORT_KEYS)).digest()
        except orjson.JSONEncodeError:  # cannot happen for what orjson parsed; written anyway
            return False
        if known.get(sale_id) == digest:
            return True
        self.pending[sale_id] = digest
        return False

    def save(self) -> None:
        """In the caller's transaction, after the files are durable."""
        if self.lookback:
            self.pruned_below, pruned = state.put_sale_hashes(
                self.conn, self.pending, self.lookback, self.pruned_below
            )
            self.pruned += pruned
        self.pending = {}

    def vacuum(self, *, at_least: int = 1) -> None:
        """After `save`'s transaction: reclaim the pruned rows once there are `at_least`."""
        if self.pruned >= at_least:
            state.vacuum_sale_hashes(self.conn)
            self.pruned = 0
