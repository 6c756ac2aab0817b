"""Bronze files: private directories, and NDJSON files that are complete or absent."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

DIR_MODE = 0o700  # customers' emails and phones are personal data
FILE_MODE = 0o600
REJECTED = "_rejected"
TEMP_SUFFIX = ".tmp"


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
    return f"{moment:%Y%m%dT%H%M%S%fZ}_{batch_id}.ndjson"


def partition_dir(bronze_dir: Path, entity: str, moment: datetime, rejected: bool = False) -> Path:
    base = bronze_dir / REJECTED if rejected else bronze_dir
    return base / entity / f"dt={moment:%Y-%m-%d}"


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

    def commit(self) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.rename(self.temp_path, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
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
