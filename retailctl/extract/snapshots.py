"""Customers and products: a full snapshot each run, paged by offset.

A snapshot read to its normal end (an empty or short page, or offset >= total_items) with
nothing rejected is complete (meta.snapshot_files): load marks the keys it lacks deleted. One
that stopped on a repeated page is not. A snapshot whose content equals the last one written
(an order-independent hash of its valid records) writes no file. The original API ignores
`offset`: a page that repeats records already read ends the snapshot with a warning instead
of looping. A source that pages on and on with new keys is stopped at a cap (twice its own
total_items plus a page, and RETAIL_MAX_SNAPSHOT_RECORDS): the entity fails and its snapshot
writes nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from retailctl.bronze_store import BronzeStore
from retailctl.errors import ContractViolation
from retailctl.extract import records
from retailctl.extract.batch import Batch
from retailctl.extract.result import EntityResult, log_result
from retailctl.store import state

if TYPE_CHECKING:
    from retailctl.extract.source import SourceClient

Progress = Callable[[str, int, int, int | None], None]  # entity, records, pages, total
Warn = Callable[[str], None]


@dataclass(frozen=True)
class SnapshotEntity:
    """A source entity read as a full snapshot: its endpoint, key and validation rule."""

    name: str  # the endpoint (/customers) and the bronze dataset
    key: str
    reject_reason: Callable[[Any], str | None]


SNAPSHOT_ENTITIES = (
    SnapshotEntity("customers", records.CUSTOMER_KEY, records.customer_reject_reason),
    SnapshotEntity("products", records.PRODUCT_KEY, records.product_reject_reason),
)


def record_hash(item: dict[str, Any]) -> int:
    return int.from_bytes(hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).digest())


def read_snapshot(
    entity: SnapshotEntity,
    source: SourceClient,
    conn: psycopg.Connection,
    bronze: BronzeStore,
    *,
    limit: int,
    max_records: int,
    progress: Progress,
    warn: Warn,
) -> EntityResult:
    """Read every page of `entity` into one bronze file, unless nothing changed.

    A source answer that breaks the contract fails this entity alone (`result.error`), with
    nothing written for it.
    """
    started = time.monotonic()
    result = EntityResult(entity.name)
    batch = Batch(bronze)
    seen: set[str] = set()
    page_hashes: set[bytes] = set()
    content = 0  # an order-independent hash: the sum of the records' hashes
    offset = 0
    cap = max_records
    complete = False  # paging ended normally: every key of the entity is in the file
    try:
        while True:
            page = source.page(f"/{entity.name}", {"limit": limit, "offset": offset})
            if not page.items:
                complete = True
                break
            if offset == 0 and page.total_items is not None:
                cap = min(max_records, 2 * page.total_items + limit)
            if offset + len(page.items) > cap:
                raise ContractViolation(
                    f"/{entity.name}: more than {cap} records (at most twice total_items plus a "
                    "page, and RETAIL_MAX_SNAPSHOT_RECORDS); the source pages on and on, no "
                    "snapshot written"
                )
            page_hash = hashlib.sha256(orjson.dumps(page.items)).digest()
            keys = [
                item[entity.key]
                for item in page.items
                if isinstance(item, dict) and isinstance(item.get(entity.key), str)
            ]
            if page_hash in page_hashes or (keys and all(k in seen for k in keys)):
                message = (
                    f"/{entity.name}: the page at offset {offset} repeats records already "
                    "read (the API ignores offset?); stopping there"
                )
                result.warnings.append(message)
                warn(message)
                break
            page_hashes.add(page_hash)
            result.pages += 1
            for item in page.items:
                reason = entity.reject_reason(item)
                if reason:
                    batch.reject(entity.name, item, reason)
                    result.rejected += 1
                    continue
                if item[entity.key] in seen:
                    result.duplicates += 1
                    continue
                seen.add(item[entity.key])
                content += record_hash(item)
                batch.file(entity.name).write(
                    {**records.keep_aside(item, records.STAMP_FIELDS), **batch.stamp}
                )
                result.records += 1
            progress(entity.name, result.records, result.pages, page.total_items)
            offset += len(page.items)
            if len(page.items) < source.effective_limit(limit) or (
                page.total_items is not None and offset >= page.total_items
            ):
                complete = True
                break
        content_hash = f"{result.records}:{content % 2**256:064x}"
        if result.records and content_hash == state.snapshot_hash(conn, entity.name):
            result.unchanged = True
            batch.discard(entity.name)
        result.files = batch.commit()
        with conn.transaction():
            if result.files:
                state.put_snapshot_hash(conn, entity.name, content_hash, result.records, result.files[0])
                # a rejected record is absent from the file, yet not gone from the source
                relative = batch.relatives[0]  # as load keys it
                state.put_snapshot_file(
                    conn, relative, entity.name, complete and not result.rejected, result.records
                )
            log_result(conn, result)
    except ContractViolation as exc:
        batch.abort()
        result.error = str(exc)
        with conn.transaction():
            log_result(conn, result)
    except BaseException:
        batch.abort()
        raise
    result.seconds = time.monotonic() - started
    return result
