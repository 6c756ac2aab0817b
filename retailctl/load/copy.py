"""Loading one bronze file in one transaction: COPY, upsert, record it in the manifest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import psycopg
from psycopg import sql

from retailctl.errors import BronzeFileError
from retailctl.load.files import BronzeFile, record_loaded
from retailctl.load.lines import End, Item, Rows, read_file
from retailctl.load.result import TableResult
from retailctl.load.tables import PLAN_FOR_SMALL_STAGE, SilverTable


@dataclass
class Counts:
    """What loading one file did."""

    sha256: str
    lines: int
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0


def load_file(conn: psycopg.Connection, file: BronzeFile, items: Iterator[Item],
              result: TableResult) -> None:
    """Load `file` (its parsed `items`) in one transaction; a crash at any instant rolls it
    back whole, and the next load takes it again.

    1. A file of new keys only (the hourly file of new sales) COPYs straight into silver: as
       fast as COPY gets.
    2. Any other file, or one of those that meets an existing key after all (a re-extracted
       chunk, a duplicate line), COPYs into a staging table; then the rows that differ are
       updated and the new keys inserted.
    3. The file is recorded in the manifest.
    """
    first = next(items)
    items = chain([first], items)
    with conn.transaction():
        counts = None
        if _only_new_keys(conn, file.table, first):
            counts = _append(conn, file, items)
            if counts is None:  # a key exists: the read-ahead has moved on, read the file again
                items = read_file(file)
        if counts is None:
            counts = _upsert(conn, file, items)
        record_loaded(conn, file, counts.sha256, counts.lines)
    result.files += 1
    result.rows += counts.lines
    result.inserted += counts.inserted
    result.updated += counts.updated
    result.unchanged += counts.lines - counts.duplicates - counts.inserted - counts.updated
    result.duplicates += counts.duplicates


def _only_new_keys(conn: psycopg.Connection, table: SilverTable, first: Item) -> bool:
    """Does the file start past the table's highest key (new sales, the usual hourly case)?"""
    if table.append_key is None or not isinstance(first, Rows):
        return False
    row = conn.execute(table.max_key_sql).fetchone()
    return row is None or row[0] is None or first.rows[0][0] > row[0]


def _append(conn: psycopg.Connection, file: BronzeFile, items: Iterator[Item]) -> Counts | None:
    """COPY straight into silver; None (rolled back to a savepoint) when a key exists."""
    try:
        with conn.transaction():
            end = _copy(conn, file.table.append_sql, file, items)
    except psycopg.errors.UniqueViolation:
        return None
    return Counts(end.sha256, end.lines, inserted=end.lines)


def _upsert(conn: psycopg.Connection, file: BronzeFile, items: Iterator[Item]) -> Counts:
    """COPY into a staging table, update what differs (never with an older _ingestion_ts),
    insert the new keys; within the file the last line of a key wins."""
    table = file.table
    conn.execute(table.create_stage_sql)
    end = _copy(conn, table.copy_sql, file, items)
    duplicates = conn.execute(table.count_duplicates_sql).fetchone()[0]  # type: ignore[index]
    conn.execute(PLAN_FOR_SMALL_STAGE)
    updated = conn.execute(table.update_sql(duplicates > 0)).rowcount
    inserted = conn.execute(table.insert_sql(duplicates > 0)).rowcount
    return Counts(end.sha256, end.lines, inserted, updated, duplicates)


def _copy(conn: psycopg.Connection, statement: sql.Composable, file: BronzeFile,
          items: Iterator[Item]) -> End:
    """COPY the file's rows with `statement`; returns its End. A line that cannot load is
    named by its number (COPY counts one row per line of the file)."""
    end = None
    try:
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for item in items:
                if isinstance(item, End):
                    end = item
                    break
                _write_rows(copy, file, item)
            if end is not None and end.problem:
                raise BronzeFileError(end.problem)
    except psycopg.errors.UniqueViolation:
        raise  # only COPY straight into silver meets a key: its caller falls back to staging
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise BronzeFileError(f"{file.relative}: {_copy_error_line(exc)}") from None
    assert end is not None, "a file's items end with its End"
    return end


def _write_rows(copy: psycopg.Copy, file: BronzeFile, batch: Rows) -> None:
    write_row = copy.write_row
    try:
        for row in batch.rows:
            write_row(row)
    except psycopg.ProgrammingError as exc:  # e.g. an object for a text column
        line = batch.first_line + next(i for i, r in enumerate(batch.rows) if r is row)
        raise BronzeFileError(f"{file.relative}: line {line}: {exc}") from None


def _copy_error_line(exc: psycopg.Error) -> str:
    """'line N: message' from a COPY error's context ('COPY stage, line 17, column …')."""
    context = exc.diag.context or ""
    marker = context.find(", line ")
    message = exc.diag.message_primary or str(exc)
    if marker < 0:
        return message
    number = context[marker + 7:].split(",", 1)[0].split(":", 1)[0]
    return f"line {number}: {message}"
