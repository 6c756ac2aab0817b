"""`bronze prune`: delete bronze files that are loaded and old; nothing else, ever."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from retailctl.bronze_files import REJECTED, fsync_dir, parse_file_name

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
    conn: psycopg.Connection, bronze_dir: Path, older_than: timedelta, *, dry_run: bool = False
) -> PruneResult:
    """Delete loaded files written before now - older_than; never an unloaded or rejected one.

    Manifest rows stay: they are the load history, and a pruned file is never listed again.
    """
    cutoff = datetime.now(UTC) - older_than
    loaded = {row[0] for row in conn.execute(LOADED)}
    result = PruneResult()
    for relative in sorted(loaded):
        path = bronze_dir / relative
        name = parse_file_name(path.name)
        if relative.startswith(f"{REJECTED}/") or name is None or name.written_at >= cutoff:
            continue
        if not path.is_file():
            continue
        result.files.append(relative)
        result.bytes += path.stat().st_size
        if not dry_run:
            path.unlink()
            fsync_dir(path.parent)
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
    return result
