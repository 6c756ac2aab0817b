"""Loading one bronze file in one transaction: COPY, upsert, record it in the manifest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import psycopg
from psycopg import sql

from retailctl.errors import BronzeFileError
from retailctl.load import changes
from retailctl.load.files import BronzeFile, record_loaded
from retailctl.load.lines import End, Item, Rows, read_checked, read_file
from retailctl.load.quarantine import Quarantine
from retailctl.load.result import TableResult
from retailctl.load.tables import PLAN_FOR_SMALL_STAGE, SilverTable

MAX_REFUSED = 100  # lines PostgreSQL may refuse in one file after the checks let them through
# What a line of data can make PostgreSQL refuse (anything else is a bug or an outage: raised).
_DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.ProgramLimitExceeded)


@dataclass
class Counts:
    """What loading one file did."""

    sha256: str
    lines: int
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    deleted: int = 0  # sale lines removed, or snapshot keys marked deleted


class _Unclean(Exception):
    """A line the way being tried cannot take; `line` when known (PostgreSQL named it)."""

    def __init__(self, reason: str = "", line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def load_file(conn: psycopg.Connection, file: BronzeFile, items: Iterator[Item], result: TableResult) -> None:
    """Load `file` (its parsed `items`) in one transaction; a crash at any instant rolls it
    back whole, and the next load takes it again.

    1. A file of new keys only (the hourly file of new sales) COPYs straight into silver: as
       fast as COPY gets.
    2. Any other file, or one of those that meets an existing key after all (a re-extracted
       chunk, a duplicate line), COPYs into a staging table; then the rows that differ are
       updated and the new keys inserted.
    3. A file with a line that 1 and 2 cannot take is read again line by line: the lines
       that cannot load are quarantined with their reasons, the others loaded as in 2.
    4. The file is recorded in the manifest, with its quarantined lines.
    """
    first = next(items)
    items = chain([first], items)
    quarantine = Quarantine(file)
    try:
        with conn.transaction():
            try:
                counts = _load_fast(conn, file, first, items)
            except _Unclean:
                counts = _load_checked(conn, file, quarantine)
            if (
                not counts.quarantined
                and file.table.snapshot
                and changes.snapshot_complete(conn, file.relative)
            ):
                counts.deleted = changes.mark_absent_deleted(conn, file.table)
            record_loaded(conn, file, counts.sha256, counts.lines - counts.quarantined, counts.quarantined)
            quarantine.commit()  # durable before the load of the other lines commits
    except BaseException:
        quarantine.abort()
        raise
    result.files += 1
    result.rows += counts.lines
    result.inserted += counts.inserted
    result.updated += counts.updated
    result.quarantined += counts.quarantined
    result.unchanged += (
        counts.lines - counts.quarantined - counts.duplicates - counts.inserted - counts.updated
    )
    result.duplicates += counts.duplicates
    result.deleted += counts.deleted
    if counts.quarantined:
        result.problems.append(
            f"{file.relative}: {counts.quarantined} line(s) quarantined to {quarantine.name} "
            f"under _rejected/load ({quarantine.first}); the other "
            f"{counts.lines - counts.quarantined} loaded"
        )


def _load_fast(conn: psycopg.Connection, file: BronzeFile, first: Item, items: Iterator[Item]) -> Counts:
    """Steps 1 and 2, in a savepoint: an unclean file rolls back to it."""
    with conn.transaction():
        counts = None
        if _only_new_keys(conn, file.table, first):
            counts = _append(conn, file, items)
            if counts is None:  # a key exists: the read-ahead has moved on, read the file again
                items = read_file(file)
        if counts is None:
            counts = _upsert(conn, file, items, whole_sales=True)
        return counts


def _load_checked(conn: psycopg.Connection, file: BronzeFile, quarantine: Quarantine) -> Counts:
    """Step 3: the lines that pass the checks, staged and upserted. Should PostgreSQL still
    refuse a line, it joins the quarantine and the file is tried again (a bounded number of
    times); a failure it cannot pin on a line fails the file (BronzeFileError)."""
    while True:
        quarantine.start()
        try:
            with conn.transaction():
                counts = _upsert(conn, file, read_checked(file, quarantine))
        except _Unclean as exc:
            if exc.line is None or len(quarantine.refused) >= MAX_REFUSED:
                raise BronzeFileError(f"{file.relative}: {exc.reason}") from None
            quarantine.refused[exc.line] = exc.reason
            continue
        counts.quarantined = quarantine.lines
        return counts


def _only_new_keys(conn: psycopg.Connection, table: SilverTable, first: Item) -> bool:
    """Does the file start past the table's highest key (new sales, the usual hourly case)?"""
    if table.append_key is None or not isinstance(first, Rows) or not first.rows:
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


def _upsert(
    conn: psycopg.Connection, file: BronzeFile, items: Iterator[Item], *, whole_sales: bool = False
) -> Counts:
    """COPY into a staging table, update what differs (never with an older _ingestion_ts),
    insert the new keys; within the file the last line of a key wins.

    A header that moves logs its old customer-day first. With `whole_sales` (every line of the
    file staged: nothing quarantined), the lines of its sales it does not hold are removed.
    """
    table = file.table
    conn.execute(table.create_stage_sql)
    end = _copy(conn, table.copy_sql, file, items)
    try:
        duplicates = conn.execute(table.count_duplicates_sql).fetchone()[0]  # type: ignore[index]
        conn.execute(PLAN_FOR_SMALL_STAGE)
        if table.name == "sales_customer":
            changes.log_moved_headers(conn, table.source(duplicates > 0))
        deleted = (
            changes.remove_absent_lines(conn, table) if whole_sales and table.name == "sales_product" else 0
        )
        updated = conn.execute(table.update_sql(duplicates > 0)).rowcount
        inserted = conn.execute(table.insert_sql(duplicates > 0)).rowcount
    except _DATA_ERRORS as exc:
        raise _Unclean(exc.diag.message_primary or str(exc)) from None
    return Counts(end.sha256, end.lines, inserted, updated, duplicates, deleted=deleted)


def _copy(
    conn: psycopg.Connection, statement: sql.Composable, file: BronzeFile, items: Iterator[Item]
) -> End:
    """COPY the file's rows with `statement`; returns its End. _Unclean for a row COPY
    refuses, with its line in the file."""
    end = None
    spans: list[tuple[int, Rows]] = []  # (rows copied before, the batch): COPY row -> line
    copied = 0
    try:
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for item in items:
                if isinstance(item, End):
                    end = item
                    break
                spans.append((copied, _numbering(item)))
                _write_rows(copy, item)
                copied += len(item.rows)
            if end is not None and end.unclean:
                raise _Unclean("a line the fast path cannot take")
    except psycopg.errors.UniqueViolation:
        raise  # only COPY straight into silver meets a key: its caller falls back to staging
    except _DATA_ERRORS as exc:
        row = _copy_error_row(exc)
        reason = exc.diag.message_primary or str(exc)
        if row is None:
            raise _Unclean(reason) from None
        before, batch = next((start, batch) for start, batch in reversed(spans) if start < row)
        raise _Unclean(reason, batch.line_of(row - 1 - before)) from None
    assert end is not None, "a file's items end with its End"
    return end


def _numbering(batch: Rows) -> Rows:
    """The batch without its rows: what maps a COPY row number back to a line."""
    return Rows(batch.file, [], batch.first_line, batch.lines)


def _write_rows(copy: psycopg.Copy, batch: Rows) -> None:
    write_row = copy.write_row
    try:
        for row in batch.rows:
            write_row(row)
    except psycopg.ProgrammingError as exc:  # e.g. an object for a text column
        index = next(i for i, r in enumerate(batch.rows) if r is row)
        raise _Unclean(str(exc), batch.line_of(index)) from None


def _copy_error_row(exc: psycopg.Error) -> int | None:
    """N from a COPY error's context ('COPY stage, line N, column …'): the Nth row sent."""
    context = exc.diag.context or ""
    marker = context.find(", line ")
    if marker < 0:
        return None
    number = context[marker + 7 :].split(",", 1)[0].split(":", 1)[0]
    return int(number) if number.isdigit() else None
