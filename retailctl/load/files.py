"""Which bronze files load: the pending ones, in write order; changed loaded files refused.

The manifest `meta.loaded_files` records every loaded file with its sha256, size and mtime, so
an hourly load costs a directory walk and a manifest read, never re-hashing of history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from retailctl.bronze_files import dataset_files, parse_file_name
from retailctl.load.tables import TABLES, SilverTable

READ_CHUNK = 1 << 20
MANIFEST_QUERY = "select path, sha256, size_bytes, mtime_ns from meta.loaded_files"
RECORD_FILE = """
insert into meta.loaded_files (path, entity, sha256, rows, batch_id, loaded_at, size_bytes, mtime_ns)
values (%s, %s, %s, %s, %s, now(), %s, %s)
"""


@dataclass(frozen=True)
class BronzeFile:
    path: Path
    relative: str  # the manifest key: the path below the bronze dir
    table: SilverTable
    size: int
    mtime_ns: int

    @property
    def batch_id(self) -> str | None:
        name = parse_file_name(self.path.name)
        return name.batch_id if name else None


def find_files(bronze_dir: Path) -> list[BronzeFile]:
    """Every bronze file of a silver table, in the order they were written (name = timestamp)."""
    found = []
    for order, table in enumerate(TABLES):
        for path in dataset_files(bronze_dir, table.dataset):
            stat = path.stat()
            found.append((path.name, order, BronzeFile(
                path, str(path.relative_to(bronze_dir)), table, stat.st_size, stat.st_mtime_ns)))
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


def record_loaded(conn: psycopg.Connection, file: BronzeFile, sha256: str, rows: int) -> None:
    """The file's manifest row; in the transaction that loaded it."""
    conn.execute(RECORD_FILE, (file.relative, file.table.dataset, sha256, rows, file.batch_id,
                               file.size, file.mtime_ns))
