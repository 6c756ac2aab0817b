"""Which bronze files load: the pending ones, in write order; changed loaded files refused.

Only what extract writes is loaded: regular files (never through a symlink) named
`<dataset>/dt=<day>/<UTC timestamp>_<batch id>.ndjson`, the day that of the timestamp. Anything
else under a dataset's directory is reported, not read.

The manifest `meta.loaded_files` records every loaded file with its sha256, size and mtime, so
an hourly load costs a directory walk and a manifest read, never re-hashing of history.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg

from retailctl.bronze_files import FileName, parse_file_name
from retailctl.load.tables import TABLES, SilverTable

READ_CHUNK = 1 << 20
MANIFEST_QUERY = "select path, sha256, size_bytes, mtime_ns from meta.loaded_files"
RECORD_FILE = """
insert into meta.loaded_files (path, entity, sha256, rows, batch_id, loaded_at, size_bytes, mtime_ns,
                               quarantined_lines)
values (%s, %s, %s, %s, %s, now(), %s, %s, %s)
"""


@dataclass(frozen=True)
class BronzeFile:
    path: Path
    relative: str  # the manifest key: the path below the bronze dir
    table: SilverTable
    name: FileName  # when and by which batch it was written: every record says the same
    size: int
    mtime_ns: int

    def open(self) -> BinaryIO:
        """Read it without following a symlink put in its place since it was found."""
        return os.fdopen(os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def find_files(bronze_dir: Path) -> tuple[list[BronzeFile], list[str]]:
    """Every bronze file of a silver table, in the order they were written (name = timestamp);
    and a line for each entry that is not one (a symlink, a foreign name)."""
    found, problems = [], []
    for order, table in enumerate(TABLES):
        for path, problem in _entries(bronze_dir / table.dataset):
            relative = str(path.relative_to(bronze_dir))
            if problem:
                problems.append(f"{relative}: {problem}; not loaded")
                continue
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                problems.append(f"{relative}: not a regular file (a symlink?); not loaded")
                continue
            name = parse_file_name(path.name)
            if name is None or path.parent.name != name.partition:
                problems.append(
                    f"{relative}: not a bronze file name extract writes "
                    "(<dt=day>/<UTC timestamp>_<batch id>.ndjson); not loaded"
                )
                continue
            found.append(
                (path.name, order, BronzeFile(path, relative, table, name, info.st_size, info.st_mtime_ns))
            )
    return [file for _, _, file in sorted(found, key=lambda item: item[:2])], problems


def _entries(dataset_dir: Path) -> Iterator[tuple[Path, str | None]]:
    """The *.ndjson entries of a dataset's partitions, with a problem for one reached through
    a symlinked directory (never followed)."""
    if dataset_dir.is_symlink():
        yield dataset_dir, "a symlink (never followed)"
        return
    if not dataset_dir.is_dir():
        return
    for partition in sorted(dataset_dir.iterdir()):
        if not partition.name.startswith("dt="):
            continue
        if partition.is_symlink():
            yield partition, "a symlink (never followed)"
        elif partition.is_dir():
            for path in sorted(partition.iterdir()):
                if path.name.endswith(".ndjson") and not path.name.startswith("."):
                    yield path, None


def sha256_of(file: BronzeFile) -> str:
    digest = hashlib.sha256()
    with file.open() as handle:
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
        if sha256_of(file) != sha256:
            errors.append(
                f"{file.relative}: changed after it was loaded (sha256 differs); "
                "bronze is append-only: restore the file or move it aside"
            )
    return pending, errors


def record_loaded(
    conn: psycopg.Connection, file: BronzeFile, sha256: str, rows: int, quarantined: int
) -> None:
    """The file's manifest row (rows loaded, lines quarantined); in the transaction that
    loaded it. A file with quarantined lines is loaded: the next load does not take it again."""
    conn.execute(
        RECORD_FILE,
        (
            file.relative,
            file.table.dataset,
            sha256,
            rows,
            file.name.batch_id,
            file.size,
            file.mtime_ns,
            quarantined,
        ),
    )
