"""`bronze prune`: delete bronze files that are loaded and old; nothing else, ever."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from retailctl.bronze_files import DATASETS, parse_file_name
from retailctl.bronze_store import BronzeStore, open_bronze

AGE = re.compile(r"^(\d+)([hdw])$")
UNITS = {"h": "hours", "d": "days", "w": "weeks"}
LOADED = "select path from meta.loaded_files"


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `4w`; ValueError otherwise."""
    match = AGE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age: expected a number and h, d or w, like 30d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class PruneResult:
    files: list[str] = field(default_factory=list)
    bytes: int = 0


def prune(
    conn: psycopg.Connection,
    bronze: str | Path | BronzeStore,
    older_than: timedelta,
    *,
    dry_run: bool = False,
) -> PruneResult:
    """Delete loaded files written before now - older_than; never an unloaded or rejected one.

    Lists each dataset's partitions up to the cutoff's day (in an object store, the pruned
    days are gone: a run lists little more than what it deletes). Manifest rows stay: they are
    the load history, and a pruned file is never listed again.
    """
    bronze = open_bronze(bronze)
    cutoff = datetime.now(UTC) - older_than
    last_partition = f"dt={cutoff:%Y-%m-%d}"
    loaded = {row[0] for row in conn.execute(LOADED)}
    result = PruneResult()
    for dataset in DATASETS:
        for entry in bronze.list(dataset):
            if entry.partition > last_partition:
                break  # partitions come in order: the rest are newer
            name = parse_file_name(entry.name)
            if entry.problem or entry.relative not in loaded or name is None or name.written_at >= cutoff:
                continue
            result.files.append(entry.relative)
            result.bytes += entry.size
            if not dry_run:
                bronze.delete(entry.relative)
    result.files.sort()
    return result
