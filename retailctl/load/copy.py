"""Loading one bronze file in one transaction: parse, COPY, upsert, record in the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from retailctl.errors import BronzeFileError
from retailctl.load.files import READ_CHUNK, BronzeFile, record_loaded
from retailctl.load.result import TableResult
from retailctl.load.tables import COPIED_EXTRA, PLAN_FOR_SMALL_STAGE

PREFETCH_BATCHES = 8  # bounded memory: at most this many batches parsed ahead


def _line_chunks(file: BronzeFile, digest: Any) -> Iterator[list[bytes]]:
    """The file's lines, a read buffer's worth at a time, hashing the bytes on the way."""
    tail = b""
    lines_read = 0
    with file.path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            lines_read += len(lines)
            yield lines
    if tail.strip():
        raise BronzeFileError(f"{file.relative}: line {lines_read + 1}: truncated (no end of line)")


def _bad_line(file: BronzeFile, line_no: int, raw: bytes) -> BronzeFileError:
    """Why the line that failed the fast path cannot load."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BronzeFileError(
            f"{file.relative}: line {line_no}: not valid JSON at column {exc.colno}: {exc.msg}")
    if not isinstance(record, dict):
        return BronzeFileError(f"{file.relative}: line {line_no}: not a JSON object")
    missing = [name for name in (*file.table.column_names, *COPIED_EXTRA) if name not in record]
    return BronzeFileError(f"{file.relative}: line {line_no}: missing field {missing[0]!r}")


@dataclass
class _Rows:
    """A batch of COPY rows of one file, in file order (row i is line first_line + i)."""

    file: BronzeFile
    rows: list[tuple[Any, ...]]
    first_line: int


@dataclass
class _FileEnd:
    file: BronzeFile
    sha256: str
    rows: int
    error: str | None = None  # the file cannot load: this line says why


def parsed_files(files: list[BronzeFile]) -> Iterator[_Rows | _FileEnd]:
    """Each file as batches of COPY rows, then its end; runs ahead on the prefetch thread so
    that parsing the next file overlaps the database's work on the current one."""
    loads = orjson.loads
    for file in files:
        pick = file.table.pick
        digest = hashlib.sha256()
        rows = 0
        try:
            for lines in _line_chunks(file, digest):
                try:
                    batch = [pick(loads(raw)) for raw in lines]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    for offset, raw in enumerate(lines):  # the slow path finds the line
                        try:
                            pick(loads(raw))
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            raise _bad_line(file, rows + offset + 1, raw) from None
                    raise
                yield _Rows(file, batch, rows + 1)
                rows += len(batch)
        except BronzeFileError as exc:
            yield _FileEnd(file, "", rows, error=str(exc))
            continue
        yield _FileEnd(file, digest.hexdigest(), rows)


def _copy_file(conn: psycopg.Connection, statement: sql.Composable, first: _Rows | _FileEnd,
               items: Iterator[_Rows | _FileEnd]) -> _FileEnd:
    """COPY the rows of `first`'s file, consuming its items; returns the file's end.

    However it ends, the file's remaining items are consumed. A line that cannot load is named
    by its number: COPY's own line count is the file's, one row per line.
    """
    file = first.file
    item = first
    try:
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            write_row = copy.write_row
            while isinstance(item, _Rows):
                try:
                    for row in item.rows:
                        write_row(row)
                except psycopg.ProgrammingError as exc:  # e.g. an object for a text column
                    line = item.first_line + next(i for i, r in enumerate(item.rows) if r is row)
                    raise BronzeFileError(f"{file.relative}: line {line}: {exc}") from None
                item = next(items)
    except psycopg.errors.UniqueViolation:
        raise  # only COPY straight into silver meets a key: its caller falls back to staging
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise BronzeFileError(f"{file.relative}: {_copy_error_line(exc)}") from None
    finally:
        while isinstance(item, _Rows):
            item = next(items)
    if item.error:
        raise BronzeFileError(item.error)
    return item


def _only_new_keys(conn: psycopg.Connection, first: _Rows | _FileEnd) -> bool:
    """Does the file start past the table's highest key (new sales, the usual hourly case)?"""
    table = first.file.table
    if table.append_key is None or not isinstance(first, _Rows):
        return False
    row = conn.execute(table.max_key_sql).fetchone()
    return row is None or row[0] is None or first.rows[0][0] > row[0]


def load_file(conn: psycopg.Connection, first: _Rows | _FileEnd,
              items: Iterator[_Rows | _FileEnd], result: TableResult) -> None:
    """Load the file `first` belongs to in one transaction, consuming its items.

    New sales COPY straight into silver: as fast as COPY gets. Should a key turn out to exist
    (a re-extracted chunk, a duplicate line), that attempt rolls back to a savepoint and the
    file goes the general way: staging table, update what differs, insert what is new.
    """
    file = first.file
    table = file.table
    with conn.transaction():
        end: _FileEnd | None = None
        duplicates = 0
        if _only_new_keys(conn, first):
            try:
                with conn.transaction():
                    end = _copy_file(conn, table.append_sql, first, items)
                    inserted, updated = end.rows, 0
            except psycopg.errors.UniqueViolation:
                reread = parsed_files([file])  # the stream has moved on: read this file again
                first, items = next(reread), reread
        if end is None:
            conn.execute(table.create_stage_sql)
            end = _copy_file(conn, table.copy_sql, first, items)
            duplicates = conn.execute(table.count_duplicates_sql).fetchone()[0]  # type: ignore[index]
            conn.execute(PLAN_FOR_SMALL_STAGE)
            updated = conn.execute(table.update_sql(duplicates > 0)).rowcount
            inserted = conn.execute(table.insert_sql(duplicates > 0)).rowcount
        record_loaded(conn, file, end.sha256, end.rows)
    result.files += 1
    result.rows += end.rows
    result.inserted += inserted
    result.updated += updated
    result.unchanged += end.rows - duplicates - inserted - updated
    result.duplicates += duplicates


def _copy_error_line(exc: psycopg.Error) -> str:
    """'line N: message' from a COPY error's context ('COPY stage, line 17, column …')."""
    context = exc.diag.context or ""
    marker = context.find(", line ")
    message = exc.diag.message_primary or str(exc)
    if marker < 0:
        return message
    number = context[marker + 7:].split(",", 1)[0].split(":", 1)[0]
    return f"line {number}: {message}"
