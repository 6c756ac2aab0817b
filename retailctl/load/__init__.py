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

from retailctl.bronze_store import BronzeStore, open_bronze
from retailctl.errors import BronzeFileError
from retailctl.load.copy import load_file
from retailctl.load.files import find_files, pending_files, read_manifest
from retailctl.load.lines import read_ahead
from retailctl.load.result import LoadResult, TableResult
from retailctl.load.tables import TABLES
from retailctl.store.db import Database

__all__ = ["LoadResult", "Progress", "TableResult", "load"]

Progress = Callable[[str, int, int, int], None]  # table, rows so far, files so far, files in all


def load(
    database: Database,
    bronze: str | Path | BronzeStore,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> LoadResult:
    """Load every pending bronze file; a file that cannot load fails alone (listed in
    `errors`), a line that cannot load is quarantined alone (`quarantined`)."""
    started = time.monotonic()
    result = LoadResult()
    with database.connect(autocommit=True, purpose="load") as conn:
        bronze = open_bronze(bronze)
        manifest = read_manifest(conn)
        found, result.errors = find_files(bronze, manifest)
        result.found = len(found)
        pending, altered = pending_files(manifest, found)
        del manifest
        result.errors += altered
        if dry_run:
            result.pending = [file.relative for file in pending]
            return result
        to_load = Counter(file.table.name for file in pending)
        for file, items in read_ahead(pending):
            table_result = result.tables[file.table.name]
            try:
                load_file(conn, file, items, table_result)
            except BronzeFileError as exc:
                result.errors.append(str(exc))
            if progress:
                progress(
                    table_result.table, table_result.rows, table_result.files, to_load[table_result.table]
                )
        for table in TABLES:  # fresh statistics: Gold's incremental plans depend on them
            changed = result.tables[table.name]
            if changed.inserted or changed.updated:
                conn.execute(table.analyze_sql)
    result.seconds = time.monotonic() - started
    return result
