"""`load`: every Bronze file into the Silver tables exactly once, at close to COPY speed.

One transaction per file: COPY into a temporary staging table, upsert into the keyed table
(only rows that really differ, never with an older `_ingestion_ts`), record the file in the
manifest. A crash at any instant rolls the file back whole; the next load takes it again.
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

from retailctl.bronze_files import REJECTED
from retailctl.db import Database
from retailctl.errors import BronzeFileError
from retailctl.silver_tables import TABLES, SilverTable

READ_CHUNK = 1 << 20

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


def _records(file: BronzeFile, digest: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each line, hashing the bytes on the way."""
    line_no = 0
    tail = b""
    with file.path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                line_no += 1
                yield line_no, _parse(file, line_no, raw)
    if tail.strip():
        raise BronzeFileError(f"{file.relative}: line {line_no + 1}: truncated (no end of line)")


def _parse(file: BronzeFile, line_no: int, raw: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BronzeFileError(
            f"{file.relative}: line {line_no}: not valid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(record, dict):
        raise BronzeFileError(f"{file.relative}: line {line_no}: not a JSON object")
    return record


def load_file(conn: psycopg.Connection, file: BronzeFile, result: TableResult) -> None:
    """Load one file in one transaction (the caller's `conn` is in autocommit mode)."""
    table = file.table
    digest = hashlib.sha256()
    with conn.transaction():
        conn.execute(table.create_stage_sql)
        rows = 0
        keys: set[tuple[Any, ...]] = set()
        duplicates = 0
        with conn.cursor() as cursor:
            try:
                with cursor.copy(table.copy_sql) as copy:
                    for line_no, record in _records(file, digest):
                        try:
                            row = table.stage_row(record, line_no)
                        except (KeyError, TypeError, ValueError) as exc:
                            raise BronzeFileError(
                                f"{file.relative}: line {line_no}: bad or missing field {exc}") from None
                        key = row[:len(table.key)]
                        if key in keys:
                            duplicates += 1
                        else:
                            keys.add(key)
                        copy.write_row(row)
                        rows += 1
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                raise BronzeFileError(f"{file.relative}: {_copy_error_line(exc)}") from None
        upsert = table.upsert_dedup_sql if duplicates else table.upsert_sql
        inserted, updated = conn.execute(upsert).fetchone() or (0, 0)
        conn.execute(RECORD_FILE, (file.relative, table.entity, digest.hexdigest(), rows,
                                   file.batch_id, file.size, file.mtime_ns))
    result.files += 1
    result.rows += rows
    result.inserted += inserted
    result.updated += updated
    result.unchanged += rows - duplicates - inserted - updated
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
        for file in pending:
            table_result = result.tables[file.table.name]
            try:
                load_file(conn, file, table_result)
            except BronzeFileError as exc:
                result.errors.append(str(exc))
            if progress:
                progress(file.table.name, table_result.rows, table_result.files)
    result.seconds = time.monotonic() - started
    return result
