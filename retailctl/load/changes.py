"""What a re-read sale or a complete snapshot changes beyond the upsert (issue 12's contract,
schema/003_changes.sql): lines a sale no longer has are deleted, the (sale, old customer-day)
pairs a load moved or shrank are logged to silver.sales_changes, and keys absent from a
complete snapshot are marked deleted. All in the transaction that loads the file, all driven by
the staged rows through primary keys: the cost follows the file, never the history.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from retailctl.load.tables import SilverTable

# A header whose customer or datetime changes: its old pair first (before the update).
LOG_MOVED_HEADERS = """
insert into silver.sales_changes (sale_id, customer_id, day)
select t.id, t.customer_id, (t.datetime at time zone 'UTC')::date
from {source} as s
join silver.sales_customer as t on t.id = s.id
where (t.customer_id, t.datetime) is distinct from (s.customer_id, s.datetime)
  and s._ingestion_ts >= t._ingestion_ts
"""
# A file holds every line of each of its sales: the lines of its sales it does not hold are
# gone (never by an older _ingestion_ts); each shrunk sale logs its customer-day at that time.
REMOVE_ABSENT_LINES = """
with incoming as (
    select sale_id, max(_ingestion_ts) as ingestion_ts from {stage} group by sale_id
), removed as (
    delete from silver.sales_product as t
    using incoming as i
    where t.sale_id = i.sale_id
      and i.ingestion_ts >= t._ingestion_ts
      and not exists (select from {stage} as s where s.sale_id = t.sale_id and s.line_no = t.line_no)
    returning t.sale_id
), logged as (
    insert into silver.sales_changes (sale_id, customer_id, day)
    select h.id, h.customer_id, (h.datetime at time zone 'UTC')::date
    from (select distinct sale_id from removed) as r
    join silver.sales_customer as h on h.id = r.sale_id
)
select count(*) from removed
"""
# Keys absent from a complete snapshot, loaded before it, not marked yet.
MARK_ABSENT_DELETED = """
update {target} as t
set _deleted_at = now(), _loaded_at = now()
where t._deleted_at is null
  and t._ingestion_ts < (select max(_ingestion_ts) from {stage})
  and not exists (select from {stage} as s where s.{key} = t.{key})
"""
SNAPSHOT_COMPLETE = "select complete from meta.snapshot_files where path = %s"
INDEX_STAGE = "create index on {stage} ({columns})"


def log_moved_headers(conn: psycopg.Connection, source: sql.Composable) -> int:
    """Log the old (customer, day) of every staged header about to change either."""
    return conn.execute(sql.SQL(LOG_MOVED_HEADERS).format(source=source)).rowcount


def remove_absent_lines(conn: psycopg.Connection, table: SilverTable) -> int:
    """Delete the lines of the staged sales the stage does not hold; returns how many."""
    _index_stage(conn, table)
    row = conn.execute(sql.SQL(REMOVE_ABSENT_LINES).format(stage=table.stage)).fetchone()
    return int(row[0]) if row else 0


def snapshot_complete(conn: psycopg.Connection, relative: str) -> bool:
    """Did extract read this snapshot file to its normal end (meta.snapshot_files)?"""
    row = conn.execute(SNAPSHOT_COMPLETE, (relative,)).fetchone()
    return bool(row and row[0])


def mark_absent_deleted(conn: psycopg.Connection, table: SilverTable) -> int:
    """Mark deleted the keys of `table` the staged complete snapshot does not hold."""
    assert table.snapshot and len(table.key) == 1
    _index_stage(conn, table)
    return conn.execute(
        sql.SQL(MARK_ABSENT_DELETED).format(
            target=sql.Identifier("silver", table.name), stage=table.stage, key=sql.Identifier(table.key[0])
        )
    ).rowcount


def _index_stage(conn: psycopg.Connection, table: SilverTable) -> None:
    """The anti-joins probe the stage by key (hash joins are off for a small stage)."""
    conn.execute(
        sql.SQL(INDEX_STAGE).format(
            stage=table.stage, columns=sql.SQL(", ").join(map(sql.Identifier, table.key))
        )
    )
