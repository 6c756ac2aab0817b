"""The extract state in `meta`: the sales cursor, snapshot hashes, the extract log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

SALES_SOURCE = "sales"

CURSOR_QUERY = """
select last_sales_id, last_run_ts, note from meta.ingestion_state where source_name = %s
"""
ADVANCE_CURSOR = """
insert into meta.ingestion_state as s (source_name, last_sales_id, last_run_ts, note)
values (%(source)s, %(next_id)s, now(), %(note)s)
on conflict (source_name) do update
set last_sales_id = greatest(coalesce(s.last_sales_id, 1), excluded.last_sales_id),
    last_run_ts = excluded.last_run_ts,
    note = excluded.note
"""
SET_CURSOR = """
insert into meta.ingestion_state (source_name, last_sales_id, last_run_ts, note)
values (%(source)s, %(next_id)s, now(), %(note)s)
on conflict (source_name) do update
set last_sales_id = excluded.last_sales_id, last_run_ts = excluded.last_run_ts, note = excluded.note
"""
SNAPSHOT_HASH_QUERY = "select content_hash from meta.snapshot_state where entity = %s"
PUT_SNAPSHOT_HASH = """
insert into meta.snapshot_state (entity, content_hash, records, path, updated_at)
values (%s, %s, %s, %s, now())
on conflict (entity) do update
set content_hash = excluded.content_hash, records = excluded.records, path = excluded.path,
    updated_at = excluded.updated_at
"""
SALE_HASHES_QUERY = "select sale_id, sha256 from meta.sale_hashes where sale_id = any(%s)"
# Only the hashes inside the window: a backfill reads far more sales than it keeps hashes of.
PUT_SALE_HASHES = """
insert into meta.sale_hashes (sale_id, sha256)
select * from unnest(%(ids)s::bigint[], %(hashes)s::bytea[]) as h (sale_id, sha256)
where h.sale_id >= %(floor)s
on conflict (sale_id) do update set sha256 = excluded.sha256
"""
# The first id of the lookback window of the cursor as it now stands: hashes below it are for
# sales an hourly run never re-reads.
SALE_HASHES_FLOOR = """
select coalesce((select last_sales_id from meta.ingestion_state where source_name = %s), 1) - %s
"""
# Bounded below too: an index scan from the table's first key would walk every entry deleted
# since the last vacuum (millions, in a long backfill); from where the last prune stopped it
# reads only the rows it deletes.
PRUNE_SALE_HASHES = "delete from meta.sale_hashes where sale_id >= %s and sale_id < %s"
VACUUM_SALE_HASHES = "vacuum meta.sale_hashes"
FORGET_SALE_HASHES = "delete from meta.sale_hashes where sale_id >= %s"
PUT_SNAPSHOT_FILE = """
insert into meta.snapshot_files (path, entity, complete, records) values (%s, %s, %s, %s)
on conflict (path) do update
set entity = excluded.entity, complete = excluded.complete, records = excluded.records
"""
LOG_EXTRACT = """
insert into meta.extract_log (entity, records, rejected, inconsistent, files, note)
values (%s, %s, %s, %s, %s, %s)
"""


@dataclass(frozen=True)
class Cursor:
    next_sales_id: int
    last_run_ts: datetime | None
    note: str | None


def read_cursor(conn: psycopg.Connection) -> Cursor:
    """The next sale id to read: 1 when nothing was ever extracted."""
    row = conn.execute(CURSOR_QUERY, (SALES_SOURCE,)).fetchone()
    if row is None:
        return Cursor(1, None, None)
    return Cursor(row[0] if row[0] is not None else 1, row[1], row[2])


def advance_cursor(conn: psycopg.Connection, next_id: int, note: str) -> None:
    """Move the cursor forward (never back) and note the run; the caller commits."""
    conn.execute(ADVANCE_CURSOR, {"source": SALES_SOURCE, "next_id": next_id, "note": note})


def set_cursor(conn: psycopg.Connection, next_id: int, note: str) -> None:
    """Put the cursor anywhere (`state set`, `state reset`). The content hashes from there on
    are forgotten: a cursor set back means "read these again", so they are written again."""
    conn.execute(SET_CURSOR, {"source": SALES_SOURCE, "next_id": next_id, "note": note})
    conn.execute(FORGET_SALE_HASHES, (next_id,))


def clear_snapshot_hashes(conn: psycopg.Connection) -> None:
    conn.execute("delete from meta.snapshot_state")


def snapshot_hash(conn: psycopg.Connection, entity: str) -> str | None:
    row = conn.execute(SNAPSHOT_HASH_QUERY, (entity,)).fetchone()
    return row[0] if row else None


def put_snapshot_hash(
    conn: psycopg.Connection, entity: str, content_hash: str, records: int, path: str
) -> None:
    conn.execute(PUT_SNAPSHOT_HASH, (entity, content_hash, records, path))


def sale_hashes(conn: psycopg.Connection, sale_ids: list[int]) -> dict[int, bytes]:
    """The recorded content hashes of these sales (those read within the lookback window)."""
    return {row[0]: bytes(row[1]) for row in conn.execute(SALE_HASHES_QUERY, (sale_ids,))}


def put_sale_hashes(
    conn: psycopg.Connection, hashes: dict[int, bytes], lookback: int, pruned_below: int = 0
) -> tuple[int, int]:
    """Record the hashes of the sales just made durable that are inside the window of the
    cursor (move the cursor first), and forget those below it, from `pruned_below` (where the
    previous prune of this run stopped; 0 the first time); the caller commits. Returns where
    this prune stopped and how many rows it deleted."""
    row = conn.execute(SALE_HASHES_FLOOR, (SALES_SOURCE, lookback)).fetchone()
    assert row is not None
    floor = int(row[0])
    if hashes:
        conn.execute(PUT_SALE_HASHES, {"ids": list(hashes), "hashes": list(hashes.values()), "floor": floor})
    pruned = conn.execute(PRUNE_SALE_HASHES, (pruned_below, floor)).rowcount if floor > pruned_below else 0
    return max(floor, pruned_below), pruned


def vacuum_sale_hashes(conn: psycopg.Connection) -> None:
    """Reclaim the rows pruned: the table is a queue (inserted at one end, deleted at the
    other) and a server with autovacuum off, or slow to reach it, would let it bloat with
    every run. Outside a transaction (`conn` in autocommit mode)."""
    conn.execute(VACUUM_SALE_HASHES)


def put_snapshot_file(conn: psycopg.Connection, path: str, entity: str, complete: bool, records: int) -> None:
    """Whether the snapshot file at `path` (below the bronze dir) holds every key of its
    entity; `load` marks the keys a complete one lacks deleted."""
    conn.execute(PUT_SNAPSHOT_FILE, (path, entity, complete, records))


def log_extract(
    conn: psycopg.Connection,
    entity: str,
    records: int,
    rejected: int,
    inconsistent: int,
    files: int,
    note: str,
) -> None:
    conn.execute(LOG_EXTRACT, (entity, records, rejected, inconsistent, files, note))
