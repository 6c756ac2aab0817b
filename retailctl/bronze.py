"""`extract`: the source API into Bronze NDJSON files, incrementally, losing nothing.

Customers and products are full snapshots (an unchanged one writes no file). Sales are read
from the cursor in chunks of a few pages: a chunk's files are made durable first, then the
cursor moves past them in one transaction, so a crash loses at most the chunk in flight and
the next run reads it again. Bronze may hold a sale twice; it never misses one.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from retailctl import records, state
from retailctl.bronze_files import NdjsonFile, file_name, partition_dir, remove_stale_temp_files
from retailctl.config import Settings
from retailctl.db import Database
from retailctl.errors import RetailctlError
from retailctl.prefetch import prefetch
from retailctl.source import SourceClient, make_client

PAGES_PER_CHUNK = 8

Progress = Callable[[str, int, int], None]  # entity, records so far, pages so far
Warn = Callable[[str], None]


@dataclass
class EntityResult:
    entity: str
    records: int = 0  # valid source records written to bronze (sales: sales, not lines)
    lines: int = 0
    rejected: int = 0
    inconsistent: int = 0
    duplicates: int = 0
    pages: int = 0
    files: list[str] = field(default_factory=list)
    unchanged: bool = False  # a snapshot identical to the last one: no file written
    cursor_from: int | None = None
    cursor_to: int | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.entity}: {self.records} records"]
        if self.entity == "sales":
            parts = [f"sales: {self.records} sales, {self.lines} lines",
                     f"cursor {self.cursor_from} -> {self.cursor_to}"]
        parts += [f"{self.rejected} rejected", f"{len(self.files)} file(s)"]
        if self.inconsistent:
            parts.append(f"{self.inconsistent} inconsistent totals")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates dropped")
        if self.unchanged:
            parts.append("unchanged since the last snapshot, no file written")
        parts.append(f"{self.seconds:.1f}s ({rate:,.0f}/s)")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stamp(batch_id: str, moment: datetime) -> dict[str, str]:
    return {"_ingestion_ts": moment.isoformat(), "_batch_id": batch_id}


class _Batch:
    """The files of one batch: one per entity (and one for rejects), committed together."""

    def __init__(self, bronze_dir: Path) -> None:
        self.bronze_dir = bronze_dir
        self.moment = datetime.now(UTC)
        self.batch_id = str(uuid.uuid4())
        self.stamp = _stamp(self.batch_id, self.moment)
        self._files: dict[tuple[str, bool], NdjsonFile] = {}
        self._committed = False

    def file(self, entity: str, rejected: bool = False) -> NdjsonFile:
        key = (entity, rejected)
        if key not in self._files:
            directory = partition_dir(self.bronze_dir, entity, self.moment, rejected)
            self._files[key] = NdjsonFile(directory, file_name(self.moment, self.batch_id))
        return self._files[key]

    def reject(self, entity: str, record: Any, reason: str) -> None:
        row = dict(record) if isinstance(record, dict) else {"_record": record}
        row.update(self.stamp)
        row["_reject_reason"] = reason
        self.file(entity, rejected=True).write(row)

    def discard(self, entity: str) -> None:
        ndjson = self._files.pop((entity, False), None)
        if ndjson is not None:
            ndjson.abort()

    def commit(self) -> list[str]:
        """Make every file durable; returns the paths of the non-rejected ones.

        Once only: a failure after it (the cursor update) must not commit the files twice.
        """
        if self._committed:
            return []
        self._committed = True
        paths = []
        for (_, rejected), ndjson in self._files.items():
            path = ndjson.commit()
            if not rejected:
                paths.append(str(path))
        return paths

    def abort(self) -> None:
        for ndjson in self._files.values():
            ndjson.abort()


class Extractor:
    """Extract each entity; `conn` is an autocommit connection: each state change its own transaction."""

    def __init__(self, source: SourceClient, conn: psycopg.Connection, bronze_dir: Path, *,
                 page_size: int, max_sales: int = 0, progress: Progress | None = None,
                 warn: Warn | None = None) -> None:
        self.source = source
        self.conn = conn
        self.bronze_dir = bronze_dir
        self.page_size = page_size
        self.max_sales = max_sales
        self.progress = progress or (lambda entity, count, pages: None)
        self.warn = warn or (lambda message: None)
        remove_stale_temp_files(bronze_dir)

    @property
    def limit(self) -> int:
        cap = self.source.limit_cap
        return min(self.page_size, cap) if cap else self.page_size

    def _warn(self, result: EntityResult, message: str) -> None:
        result.warnings.append(message)
        self.warn(message)

    # -- customers and products: full snapshots ---------------------------------------

    def snapshot(self, entity: str) -> EntityResult:
        started = time.monotonic()
        key, validate = ((records.CUSTOMER_KEY, records.customer_reject_reason)
                         if entity == "customers"
                         else (records.PRODUCT_KEY, records.product_reject_reason))
        result = EntityResult(entity)
        batch = _Batch(self.bronze_dir)
        seen: set[str] = set()
        page_hashes: set[bytes] = set()
        content = 0  # an order-independent hash: the sum of the records' hashes
        offset = 0
        try:
            while True:
                page = self.source.page(f"/{entity}", {"limit": self.limit, "offset": offset})
                if not page.items:
                    break
                page_hash = hashlib.sha256(orjson.dumps(page.items)).digest()
                keys = [item[key] for item in page.items
                        if isinstance(item, dict) and isinstance(item.get(key), str)]
                if page_hash in page_hashes or (keys and all(k in seen for k in keys)):
                    self._warn(result, f"/{entity}: the page at offset {offset} repeats records "
                                       "already read (the API ignores offset?); stopping there")
                    break
                page_hashes.add(page_hash)
                result.pages += 1
                for item in page.items:
                    reason = validate(item)
                    if reason:
                        batch.reject(entity, item, reason)
                        result.rejected += 1
                        continue
                    if item[key] in seen:
                        result.duplicates += 1
                        continue
                    seen.add(item[key])
                    content += int.from_bytes(
                        hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).digest())
                    batch.file(entity).write({**item, **batch.stamp})
                    result.records += 1
                self.progress(entity, result.records, result.pages)
                offset += len(page.items)
                if len(page.items) < self.limit or (
                        page.total_items is not None and offset >= page.total_items):
                    break
            content_hash = f"{result.records}:{content % 2**256:064x}"
            if result.records and content_hash == state.snapshot_hash(self.conn, entity):
                result.unchanged = True
                batch.discard(entity)
            paths = batch.commit()
            with self.conn.transaction():
                if paths:
                    state.put_snapshot_hash(self.conn, entity, content_hash, result.records, paths[0])
                self._log(result, len(paths))
            result.files = paths
        except BaseException:
            batch.abort()
            raise
        result.seconds = time.monotonic() - started
        return result

    # -- sales: incremental from the cursor --------------------------------------------

    def sales(self, from_id: int | None = None) -> EntityResult:
        started = time.monotonic()
        cursor = state.read_cursor(self.conn).next_sales_id
        start = from_id if from_id is not None else cursor
        result = EntityResult("sales", cursor_from=start, cursor_to=start)
        if from_id is not None:
            self._warn(result, f"backfill: reading sales from id {from_id} "
                               f"(the cursor stays at {max(cursor, 1)} or beyond)")
        batch = _Batch(self.bronze_dir)
        pages_in_batch = 0
        try:
            for sales, next_start in prefetch(self._sales_pages(start, result)):
                for sale in sales:
                    self._write_sale(batch, sale, result)
                result.pages += 1
                result.cursor_to = next_start
                self.progress("sales", result.records, result.pages)
                pages_in_batch += 1
                if pages_in_batch >= PAGES_PER_CHUNK:
                    self._commit_sales(batch, result)
                    batch, pages_in_batch = _Batch(self.bronze_dir), 0
            self._commit_sales(batch, result)
        except RetailctlError:
            self._commit_sales(batch, result)  # keep the pages read before the failure
            raise
        except BaseException:
            batch.abort()
            raise
        with self.conn.transaction():
            self._log(result, len(result.files))
        result.seconds = time.monotonic() - started
        return result

    def _sales_pages(self, start: int, result: EntityResult) -> Iterator[tuple[list[Any], int]]:
        """Yield (sales at or after the start, next start) per page, until the end, the cap,
        or a page that does not advance. Runs on the prefetch thread."""
        taken = 0
        while True:
            remaining = self.max_sales - taken if self.max_sales else None
            if remaining == 0:
                return
            limit = self.limit
            page = self.source.page("/sales", {"start_sales_id": start, "limit": limit})
            items = page.items[:remaining] if remaining is not None else page.items
            # Sales before the start were read already; one without a valid id is kept, to be
            # rejected with its reason.
            fresh = [s for s in items if (sale_id := _sale_id(s)) is None or sale_id < 1
                     or sale_id >= start]
            ids = [sale_id for s in fresh if (sale_id := _sale_id(s)) is not None and sale_id >= start]
            if not page.items:
                return
            if not ids:
                self._warn(result, f"/sales?start_sales_id={start} returned no sale at or "
                                   "after that id; paging does not advance, stopping there")
                if fresh:
                    yield fresh, start  # sales without a valid id: to _rejected, with the reason
                return
            taken += len(fresh)
            start = max(ids) + 1
            yield fresh, start
            if len(page.items) < limit:
                return

    def _write_sale(self, batch: _Batch, sale: Any, result: EntityResult) -> None:
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

    def _commit_sales(self, batch: _Batch, result: EntityResult) -> None:
        """Files first, durable; then the cursor past them."""
        next_id = result.cursor_to
        assert next_id is not None
        result.files += batch.commit()
        note = (f"extract at {batch.moment:%Y-%m-%d %H:%M:%S}Z: {result.records} sales read "
                f"from id {result.cursor_from}, next id {next_id}")
        with self.conn.transaction():
            state.advance_cursor(self.conn, next_id, note)

    def _log(self, result: EntityResult, files: int) -> None:
        note = "; ".join(result.warnings) or None
        state.log_extract(self.conn, result.entity, result.records, result.rejected,
                          result.inconsistent, files, note or "")


def _sale_id(sale: Any) -> int | None:
    if isinstance(sale, dict):
        sale_id = sale.get("id")
        if isinstance(sale_id, int) and not isinstance(sale_id, bool):
            return sale_id
    return None


def extract(settings: Settings, database: Database, *, entities: Sequence[str] = records.ENTITIES,
            from_id: int | None = None, progress: Progress | None = None,
            warn: Warn | None = None) -> list[EntityResult]:
    """Extract the given entities in order (customers, products, sales) from the configured API."""
    settings.require_source()
    assert settings.api_url is not None and settings.effective_api_key is not None
    with make_client(settings.api_url, settings.effective_api_key, settings.http_timeout) as http, \
            database.connect(autocommit=True, purpose="extract") as conn:
        source = SourceClient(http, attempts=settings.http_retries, warn=warn or (lambda m: None))
        extractor = Extractor(source, conn, settings.bronze_dir, page_size=settings.page_size,
                              max_sales=settings.max_sales_per_run, progress=progress, warn=warn)
        results = []
        for entity in records.ENTITIES:
            if entity in entities:
                results.append(extractor.sales(from_id) if entity == "sales"
                               else extractor.snapshot(entity))
        return results
