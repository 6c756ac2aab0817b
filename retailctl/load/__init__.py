"""`load`: every Bronze file into the Silver tables exactly once, at close to COPY speed.

Which files (`files`: the pending ones, in write order), read how (`lines`: parsed ahead on a
thread), loaded how (`copy`: one transaction per file — COPY, update the rows that really
differ, insert the new keys, record the file in the manifest). A line that cannot load exactly
(`checks`) is set aside with its reason (`quarantine`) and the rest of its file loads. The
tables are data (`tables`), their SQL composed from it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg

from retailctl import stopping
from retailctl.bronze_store import BronzeStore, open_bronze
from retailctl.errors import BronzeFileError
from retailctl.load.arrivals import Arrivals
from retailctl.load.copy import load_file
from retailctl.load.files import BronzeFile, find_files, pending_files, read_manifest
from retailctl.load.lines import read_ahead
from retailctl.load.result import LoadResult, TableResult
from retailctl.load.tables import TABLES
from retailctl.store.db import Database

__all__ = ["Arrivals", "LoadResult", "Progress", "TableResult", "load"]

Progress = Callable[[str, int, int, int], None]  # table, rows so far, files so far, files in all


def load(
    database: Database,
    bronze: str | Path | BronzeStore,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    arrivals: Arrivals | None = None,
) -> LoadResult:
    """Load every pending bronze file; a file that cannot load fails alone (listed in
    `errors`), a line that cannot load is quarantined alone (`quarantined`).

    With `arrivals`, the load follows an extract running beside it: it loads what is pending,
    waits for the next committed chunk, loads again, and returns once a pass that began after
    extract ended is done (see Arrivals)."""
    started = time.monotonic()
    result = LoadResult()
    with database.connect(autocommit=True, purpose="load") as conn:
        bronze = open_bronze(bronze)
        failed: set[str] = set()  # files a pass could not load: not tried again by the next
        planned: Counter[str] = Counter()  # files per table, all passes: the progress totals
        while True:
            last = arrivals is None or arrivals.ended
            pending = _pending(conn, bronze, result, failed)
            if dry_run:
                result.pending = [file.relative for file in pending]
                return result
            planned.update(file.table.name for file in pending)
            _load_files(conn, pending, result, failed, planned, progress, arrivals)
            if last or arrivals is None or arrivals.stopped:
                break
            arrivals.wait()
        for table in TABLES:
            changed = result.tables[table.name]
            written = changed.inserted + changed.updated
            if written and _statistics_stale(conn, table.regclass, written):
                conn.execute(table.analyze_sql)
    result.seconds = time.monotonic() - started
    return result


def _pending(
    conn: psycopg.Connection, bronze: BronzeStore, result: LoadResult, failed: set[str]
) -> list[BronzeFile]:
    """The files to load now, in write order; errors for loaded files changed since."""
    manifest = read_manifest(conn)
    found, errors = find_files(bronze, manifest)
    result.found = len(found)
    pending, altered = pending_files(manifest, found)
    result.errors += [error for error in [*errors, *altered] if error not in result.errors]
    return [file for file in pending if file.relative not in failed]


def _load_files(
    conn: psycopg.Connection,
    pending: list[BronzeFile],
    result: LoadResult,
    failed: set[str],
    planned: Counter[str],
    progress: Progress | None,
    arrivals: Arrivals | None,
) -> None:
    for file, items in read_ahead(pending):
        stopping.raise_if_stopped()
        if arrivals is not None and arrivals.stopped:
            return
        table_result = result.tables[file.table.name]
        try:
            load_file(conn, file, items, table_result)
        except BronzeFileError as exc:
            failed.add(file.relative)
            result.errors.append(str(exc))
        if progress:
            progress(table_result.table, table_result.rows, table_result.files, planned[table_result.table])


# autoanalyze's rule with PostgreSQL's defaults (never analyzed, or over 50 rows + 10 % changed
# since), counted here too because autovacuum may be off; `written` is this load's rows, which
# the statistics counters may not show yet
STATISTICS_STALE = """
select s.relid is null
    or coalesce(s.last_analyze, s.last_autoanalyze) is null
    or c.reltuples < 0
    or s.n_mod_since_analyze + %s > 50 + 0.1 * c.reltuples
from pg_class as c
left join pg_stat_user_tables as s on s.relid = c.oid
where c.oid = %s::regclass
"""


def _statistics_stale(conn: psycopg.Connection, regclass: str, written: int) -> bool:
    """Whether to ANALYZE a silver table after writing `written` rows to it: the first load
    and big ones do; an hourly load of a few thousand rows into millions does not (ANALYZE
    samples up to 30,000 pages: 0.14 s per table at 3M sales, more out of cache), as Gold's
    incremental plans go through indexes and need no fresh statistics every hour."""
    row = conn.execute(STATISTICS_STALE, (written, regclass)).fetchone()
    return bool(row and row[0])
