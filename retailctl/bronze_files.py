"""The bronze layout, the contract between extract and load.

`<bronze>/<dataset>/dt=YYYY-MM-DD/<UTC timestamp>_<batch id>.ndjson`, where a dataset is one of
DATASETS (DESIGN.md calls them entities); rejected records under `<bronze>/_rejected/<source
entity>/…`, and lines load quarantined under `<bronze>/_rejected/load/<dataset>/…` (the bronze
file's own path below it). Every record of a file carries the moment and batch of its name as
`_ingestion_ts` and `_batch_id`. Directories are private, and a file is complete or absent.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

DIR_MODE = 0o700  # customers' emails and phones are personal data
FILE_MODE = 0o600
REJECTED = "_rejected"
QUARANTINE = f"{REJECTED}/load"  # lines `load` could not store, below the bronze dir
TEMP_SUFFIX = ".tmp"
DATASETS = ("customers", "products", "sales_customer", "sales_product")
NAME_TIMESTAMP = "%Y%m%dT%H%M%S%fZ"
PARTITION_GLOB = "dt=*/*.ndjson"


def ensure_private_dir(path: Path) -> None:
    """Create `path` and any missing parent with mode 0700 (makedirs would use 0755)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        directory.chmod(DIR_MODE)


def file_name(moment: datetime, batch_id: str) -> str:
    """`<UTC timestamp>_<batch>.ndjson`; the timestamp sorts in write order."""
    return f"{moment:{NAME_TIMESTAMP}}_{batch_id}.ndjson"


@dataclass(frozen=True)
class FileName:
    """What a bronze file's name says: when it was written and by which batch."""

    written_at: datetime
    batch_id: str

    @property
    def ingestion_ts(self) -> str:
        """The `_ingestion_ts` extract writes on every record of the file (the same moment)."""
        return self.written_at.isoformat()

    @property
    def partition(self) -> str:
        return f"dt={self.written_at:%Y-%m-%d}"


def parse_file_name(name: str) -> FileName | None:
    """The inverse of `file_name`; None for a name extract does not write."""
    stamp, _, rest = name.partition("_")
    batch_id = rest.removesuffix(".ndjson")
    if not batch_id or batch_id == rest:
        return None
    try:
        moment = datetime.strptime(stamp, NAME_TIMESTAMP).replace(tzinfo=UTC)
        if str(uuid.UUID(batch_id)) != batch_id:
            return None
    except ValueError:
        return None
    if file_name(moment, batch_id) != name:
        return None
    return FileName(moment, batch_id)


def partition_dir(bronze_dir: Path, dataset: str, moment: datetime, rejected: bool = False) -> Path:
    base = bronze_dir / REJECTED if rejected else bronze_dir
    return base / dataset / f"dt={moment:%Y-%m-%d}"


def relative_path(dataset: str, moment: datetime, batch_id: str, rejected: bool = False) -> str:
    """A file's name below the bronze root, `/`-separated: the manifest's key, an object's key."""
    base = f"{REJECTED}/" if rejected else ""
    return f"{base}{dataset}/dt={moment:%Y-%m-%d}/{file_name(moment, batch_id)}"


def dataset_files(bronze_dir: Path, dataset: str) -> list[Path]:
    """The files of one dataset (or, with `_rejected/<entity>`, of its rejects), any order."""
    directory = bronze_dir / dataset
    return list(directory.glob(PARTITION_GLOB)) if directory.is_dir() else []


class NdjsonFile:
    """Written under a hidden temporary name, fsynced, then renamed: a reader never sees half."""

    def __init__(self, directory: Path, name: str) -> None:
        ensure_private_dir(directory)
        self.path = directory / name
        self.temp_path = directory / f".{name}{TEMP_SUFFIX}"
        fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self.rows = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.rows += 1

    def close(self) -> None:
        """Make the temporary file durable (a full disk shows here: the file is then removed,
        and the first error is the one raised)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except BaseException:
            self.abort()
            raise

    def publish(self) -> Path:
        """Rename the durable temporary file to its name."""
        os.rename(self.temp_path, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def commit(self) -> Path:
        self.close()
        return self.publish()

    def abort(self) -> None:
        """Drop the temporary file; never raises (a write that failed already said why)."""
        with contextlib.suppress(OSError):
            self._file.close()  # closes the descriptor even when the flush fails
        with contextlib.suppress(OSError):
            self.temp_path.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(bronze_dir: Path) -> int:
    """Temporary files of a killed extract: never renamed, so never part of bronze."""
    removed = 0
    if bronze_dir.exists():
        for temp in bronze_dir.rglob(f".*.ndjson{TEMP_SUFFIX}"):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed
