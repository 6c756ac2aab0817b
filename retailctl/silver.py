"""`load`: every Bronze file into the Silver tables exactly once, at close to COPY speed.

One transaction per file: COPY into a temporary staging table, update the keyed table's rows
that really differ (never with an older `_ingestion_ts`), insert the new keys, record the file
in the manifest. A crash at any instant rolls the file back whole; the next load takes it again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from retailctl.bronze_files import REJECTED
from retailctl.db import Database
from retailctl.errors import BronzeFileError
from retailctl.prefetch import prefetch
from retailctl.silver_tables import COPIED_EXTRA, PLAN_FOR_SMALL_STAGE, TABLES, SilverTable

READ_CHUNK = 1 << 20
ROWS_PER_BATCH = 5_000
PREFETCH_BATCHES = 8  # bounded memory: at most this many batches parsed ahead

MANIFEST_QUERY = "select path, sha256, size_bytes, mtime_ns from meta.loaded_files"
RECORD_FILE = """
insert into meta.loaded_files (path, entity, sha256, rows, batch_id, loaded_at, size_bytes, mtime_ns)
values (%s, %s, %s, %s, %s, now(), %s, %s)
"""

Progress = Callable[[str, int, int], None]  # table, rows so far, files so far


@dataclass(frozen=True)
class BronzeFile:
    path: Path
    relative: str  # the manifest key: the path below the bronze dir
    table: SilverTable
    size: int
    mtime_ns: int

    @property
    def batch_id(self) -> str | None:
        name = self.path.stem
        return name.split("_", 1)[1] if "_" in name else None


@dataclass
class TableResult:
    table: str
    files: int = 0
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0

    def summary(self) -> str:
        return (f"{self.table}: {self.files} file(s), {self.rows} rows: {self.inserted} inserted, "
                f"{self.updated} updated, {self.unchanged} unchanged")


@dataclass
class LoadResult:
    tables: dict[str, TableResult] = field(
        default_factory=lambda: {t.name: TableResult(t.name) for t in TABLES})
    pending: list[str] = field(default_factory=list)  # with --dry-run: what would load
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_files(bronze_dir: Path) -> list[BronzeFile]:
    """Every bronze file of a silver entity, in the order they were written (name = timestamp)."""
    found = []
    for order, table in enumerate(TABLES):
        entity_dir = bronze_dir / table.entity
        if not entity_dir.is_dir():
            continue
        for path in entity_dir.glob("dt=*/*.ndjson"):
            stat = path.stat()
            found.append((path.name, order, BronzeFile(
                path, str(path.relative_to(bronze_dir)), table, stat.st_size, stat.st_mtime_ns)))
    assert REJECTED not in {table.entity for table in TABLES}
    return [file for _, _, file in sorted(found, key=lambda item: item[:2])]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pending_files(conn: psycopg.Connection, files: list[BronzeFile]) -> tuple[list[BronzeFile], list[str]]:
    """Files not yet in the manifest; and errors for loaded files whose content changed since."""
    manifest = {row[0]: row[1:] for row in conn.execute(MANIFEST_QUERY)}
    pending, errors = [], []
    for file in files:
        known = manifest.get(file.relative)
        if known is None:
            pending.append(file)
            continue
        sha256, size, mtime_ns = known
        if (size, mtime_ns) == (file.size, file.mtime_ns):
            continue  # untouched since it was loaded
        if sha256_of(file.path) != sha256:
            errors.append(f"{file.relative}: changed after it was loaded (sha256 differs); "
                          "bronze is append-only: restore the file or move it aside")
    return pending, errors


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


def _parsed(files: list[BronzeFile]) -> Iterator[_Rows | _FileEnd]:
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


def _load_one(conn: psycopg.Connection, first: _Rows | _FileEnd,
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
                reread = _parsed([file])  # the stream has moved on: read this file again
                first, items = next(reread), reread
        if end is None:
            conn.execute(table.create_stage_sql)
            end = _copy_file(conn, table.copy_sql, first, items)
            duplicates = conn.execute(table.count_duplicates_sql).fetchone()[0]  # type: ignore[index]
            conn.execute(PLAN_FOR_SMALL_STAGE)
            updated = conn.execute(table.update_sql(duplicates > 0)).rowcount
            inserted = conn.execute(table.insert_sql(duplicates > 0)).rowcount
        conn.execute(RECORD_FILE, (file.relative, table.entity, end.sha256, end.rows,
                                   file.batch_id, file.size, file.mtime_ns))
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
        items = prefetch(_parsed(pending), depth=PREFETCH_BATCHES)
        for first in items:
            table_result = result.tables[first.file.table.name]
            try:
                _load_one(conn, first, items, table_result)
            except BronzeFileError as exc:
                result.errors.append(str(exc))
            if progress:
                progress(table_result.table, table_result.rows, table_result.files)
        for table in TABLES:  # fresh statistics: Gold's incremental plans depend on them
            changed = result.tables[table.name]
            if changed.inserted or changed.updated:
                conn.execute(table.analyze_sql)
    result.seconds = time.monotonic() - started
    return result
