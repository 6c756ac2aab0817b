"""`load`: every Bronze file into the Silver tables exactly once, at close to COPY speed.

One transaction per file (`copy`): COPY, update the rows that really differ (never with an
older `_ingestion_ts`), insert the new keys, record the file in the manifest (`files`). A crash
at any instant rolls the file back whole; the next load takes it again. The tables are data
(`tables`), their SQL composed from it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from retailctl.errors import BronzeFileError
from retailctl.load.copy import PREFETCH_BATCHES, load_file, parsed_files
from retailctl.load.files import find_files, pending_files
from retailctl.load.result import LoadResult, TableResult
from retailctl.load.tables import TABLES
from retailctl.prefetch import prefetch
from retailctl.store.db import Database

__all__ = ["LoadResult", "Progress", "TableResult", "load"]

Progress = Callable[[str, int, int, int], None]  # table, rows so far, files so far, files in all


def load(database: Database, bronze_dir: Path, *, dry_run: bool = False,
         progress: Progress | None = None) -> LoadResult:
    """Load every pending bronze file; a bad file fails alone (listed in `errors`)."""
    started = time.monotonic()
    result = LoadResult()
    with database.connect(autocommit=True, purpose="load") as conn:
        pending, result.errors = pending_files(conn, find_files(bronze_dir))
        if dry_run:
            result.pending = [file.relative for file in pending]
            return result
        to_load = Counter(file.table.name for file in pending)
        items = prefetch(parsed_files(pending), depth=PREFETCH_BATCHES)
        for first in items:
            table_result = result.tables[first.file.table.name]
            try:
                load_file(conn, first, items, table_result)
            except BronzeFileError as exc:
                result.errors.append(str(exc))
            if progress:
                progress(table_result.table, table_result.rows, table_result.files,
                         to_load[table_result.table])
        for table in TABLES:  # fresh statistics: Gold's incremental plans depend on them
            changed = result.tables[table.name]
            if changed.inserted or changed.updated:
                conn.execute(table.analyze_sql)
    result.seconds = time.monotonic() - started
    return result
