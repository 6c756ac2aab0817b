"""Which bronze files load: the pending ones, in write order; changed loaded files refused.

Only what extract writes is loaded: regular files (never through a symlink) named
`<dataset>/dt=<day>/<UTC timestamp>_<batch id>.ndjson`, the day that of the timestamp. Anything
else under a dataset's directory is reported, not read.

The manifest `meta.loaded_files` records every loaded file with its sha256, size and version
(mtime_ns on disk, a number from the ETag in an object store), so an hourly load costs a
listing and a manifest read, never re-hashing of history. In an object store, where a listing
is requests, it starts a day before the newest partition loaded (a day's margin for clocks
that differ between machines): an hour lists a day or two, not years of history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from typing import BinaryIO

import psycopg

from retailctl.bronze_files import FileName, parse_file_name
from retailctl.bronze_store import BronzeStore
from retailctl.load.tables import TABLES, SilverTable

READ_CHUNK = 1 << 20
MANIFEST_QUERY = "select path, sha256, size_bytes, mtime_ns from meta.loaded_files"
RECORD_FILE = """
insert into meta.loaded_files (path, entity, sha256, rows, batch_id, loaded_at, size_bytes, mtime_ns,
                               quarantined_lines)
values (%s, %s, %s, %s, %s, now(), %s, %s, %s)
"""
LISTING_MARGIN = timedelta(days=1)

Manifest = dict[str, tuple[str, int | None, int | None]]  # path -> sha256, size, version


@dataclass(frozen=True)
class BronzeFile:
    store: BronzeStore
    relative: str  # the manifest key: the path below the bronze root
    table: SilverTable
    name: FileName  # when and by which batch it was written: every record says the same
    size: int
    mtime_ns: int  # the version: mtime_ns on disk, from the ETag in an object store

    def open(self) -> BinaryIO:
        """Read it (on disk, without following a symlink put in its place since it was found)."""
        return self.store.open(self.relative)


def read_manifest(conn: psycopg.Connection) -> Manifest:
    return {row[0]: row[1:] for row in conn.execute(MANIFEST_QUERY)}


def find_files(bronze: BronzeStore, manifest: Manifest | None = None) -> tuple[list[BronzeFile], list[str]]:
    """Every bronze file of a silver table, in the order they were written (name = timestamp);
    and a line for each entry that is not one (a symlink, a foreign name). From an object
    store, only the partitions from a day before the newest one in `manifest`."""
    found, problems = [], []
    for order, table in enumerate(TABLES):
        since = listing_start(manifest, table.dataset) if bronze.remote else None
        for entry in bronze.list(table.dataset, since):
            relative = entry.relative
            if entry.problem:
                problems.append(f"{relative}: {entry.problem}; not loaded")
                continue
            name = parse_file_name(entry.name)
            if name is None or entry.partition != name.partition:
                problems.append(
                    f"{relative}: not a bronze file name extract writes "
                    "(<dt=day>/<UTC timestamp>_<batch id>.ndjson); not loaded"
                )
                continue
            found.append(
                (entry.name, order, BronzeFile(bronze, relative, table, name, entry.size, entry.version))
            )
    return [file for _, _, file in sorted(found, key=lambda item: item[:2])], problems


def listing_start(manifest: Manifest | None, dataset: str) -> str | None:
    """`dt=<day before the newest partition loaded>` of a dataset; None: list it all."""
    prefix = f"{dataset}/dt="
    newest = max((path for path in manifest or {} if path.startswith(prefix)), default=None)
    if newest is None:
        return None
    try:
        day = date.fromisoformat(newest[len(prefix) : len(prefix) + 10])
    except ValueError:
        return None
    return f"dt={day - LISTING_MARGIN:%Y-%m-%d}"


def sha256_of(file: BronzeFile) -> str:
    digest = hashlib.sha256()
    with file.open() as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pending_files(manifest: Manifest, files: list[BronzeFile]) -> tuple[list[BronzeFile], list[str]]:
    """Files not yet in the manifest; and errors for loaded files whose content changed since."""
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
