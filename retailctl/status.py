"""`status`: what a person on call wants first — cursor, lock, recent runs, rows per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from retailctl.bronze_files import REJECTED
from retailctl.bronze_store import BronzeStore, open_bronze
from retailctl.extract.records import ENTITIES
from retailctl.load.tables import TABLES
from retailctl.store import state
from retailctl.store.lock import lock_holder
from retailctl.store.migrations import migration_files, pending

GOLD_TABLES = ("dim_customer", "dim_product", "sales_item", "mart_sales_by_customer", "customers_snapshot")
RECENT_RUNS = """
select run_id, trigger, host, started_at, finished_at, status, error,
       extract(epoch from finished_at - started_at) as seconds
from meta.pipeline_runs order by started_at desc limit %s
"""
QUARANTINED_LINES = "select coalesce(sum(quarantined_lines), 0)::bigint from meta.loaded_files"
EXTRACT_TOTALS = """
select coalesce(sum(rejected), 0)::bigint, coalesce(sum(inconsistent), 0)::bigint,
       coalesce(sum(rejected) filter (where extracted_at > now() - interval '24 hours'), 0)::bigint
from meta.extract_log
"""


def count_rows(conn: psycopg.Connection, schema: str, table: str) -> int | None:
    """Rows in a table; None when it does not exist (Gold before its first build)."""
    exists = conn.execute("select to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table)))
    return int(row.fetchone()[0])  # type: ignore[index]


def _freshness(conn: psycopg.Connection, table: str) -> Any:
    query = sql.SQL("select max(_loaded_at) from {}").format(sql.Identifier("silver", table))
    return conn.execute(query).fetchone()[0]  # type: ignore[index]


def bronze_files(bronze: str | Path | BronzeStore) -> dict[str, int]:
    bronze = open_bronze(bronze)

    def count(dataset: str) -> int:
        return sum(1 for entry in bronze.list(dataset) if entry.problem is None)

    counts = {table.dataset: count(table.dataset) for table in TABLES}
    counts[REJECTED] = sum(count(f"{REJECTED}/{entity}") for entity in ENTITIES)
    return counts


def schema_problem(conn: psycopg.Connection) -> str | None:
    """Why the database cannot be reported on yet (status never migrates), or None."""
    missing = pending(conn)
    if missing and len(missing) == len(migration_files()):
        return "not initialised; run `retailctl db migrate` or `retailctl run-all`"
    if missing:
        return (
            f"schema not up to date ({len(missing)} migration(s) pending); run "
            "`retailctl db migrate` or `retailctl run-all`"
        )
    return None


def collect(conn: psycopg.Connection, bronze_dir: str | Path | BronzeStore, runs: int = 5) -> dict[str, Any]:
    problem = schema_problem(conn)
    if problem:
        return {"initialised": False, "database": problem}
    cursor = state.read_cursor(conn)
    rejected, inconsistent, rejected_24h = conn.execute(EXTRACT_TOTALS).fetchone()  # type: ignore[misc]
    columns = ("run_id", "trigger", "host", "started_at", "finished_at", "status", "error", "seconds")
    return {
        "initialised": True,
        "cursor": {
            "next_sales_id": cursor.next_sales_id,
            "last_run_ts": cursor.last_run_ts,
            "note": cursor.note,
        },
        "lock_holder": lock_holder(conn),  # a LockHolder (JSON: its fields) or None
        "runs": [
            dict(zip(columns, row, strict=True)) for row in conn.execute(RECENT_RUNS, (runs,)).fetchall()
        ],
        "bronze_files": bronze_files(bronze_dir),
        "silver_rows": {table.name: count_rows(conn, "silver", table.name) for table in TABLES},
        "gold_rows": {table: count_rows(conn, "gold", table) for table in GOLD_TABLES},
        "silver_loaded_at": {table.name: _freshness(conn, table.name) for table in TABLES},
        "rejected_records": {"total": rejected, "last_24h": rejected_24h},
        "quarantined_lines": conn.execute(QUARANTINED_LINES).fetchone()[0],  # type: ignore[index]
        "inconsistent_totals": inconsistent,
    }
