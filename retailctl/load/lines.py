"""Reading bronze files as batches of COPY rows, hashed on the way, parsed ahead on a thread.

A file reads as a run of `Rows` (a read buffer's worth of lines each) closed by one `End` (its
sha256 and line count, or the problem that stopped it). `read_ahead` parses the next files
while the database works on the current one, and hands them out one file at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, groupby
from operator import attrgetter
from typing import Any

import orjson

from retailctl.errors import BronzeFileError
from retailctl.load.files import READ_CHUNK, BronzeFile
from retailctl.load.tables import COPIED_EXTRA
from retailctl.prefetch import prefetch

READ_AHEAD_BATCHES = 8  # bounded memory: at most this many batches parsed ahead


@dataclass
class Rows:
    """COPY rows of consecutive lines of one file; rows[i] is line first_line + i."""

    file: BronzeFile
    rows: list[tuple[Any, ...]]
    first_line: int


@dataclass
class End:
    """The end of one file: its sha256 and line count, or why it could not be read."""

    file: BronzeFile
    sha256: str
    lines: int
    problem: str | None = None  # names the file and the line


Item = Rows | End


def read_file(file: BronzeFile) -> Iterator[Item]:
    """The file's rows in order, then its End."""
    pick = file.table.pick
    loads = orjson.loads
    digest = hashlib.sha256()
    lines = 0
    try:
        for chunk in _line_chunks(file, digest):
            try:
                rows = [pick(loads(raw)) for raw in chunk]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise _first_bad_line(file, chunk, lines) from None
            yield Rows(file, rows, lines + 1)
            lines += len(chunk)
    except BronzeFileError as exc:
        yield End(file, "", lines, problem=str(exc))
        return
    yield End(file, digest.hexdigest(), lines)


def read_ahead(files: list[BronzeFile]) -> Iterator[tuple[BronzeFile, Iterator[Item]]]:
    """(file, its items) per file, in order; parsing runs ahead across file boundaries.

    A consumer that leaves a file's items unfinished skips the rest of them (groupby does).
    """
    stream = prefetch(chain.from_iterable(map(read_file, files)), depth=READ_AHEAD_BATCHES)
    return groupby(stream, key=attrgetter("file"))


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


def _first_bad_line(file: BronzeFile, chunk: list[bytes], lines_before: int) -> BronzeFileError:
    """Which line of the chunk failed the fast path, and why."""
    for offset, raw in enumerate(chunk):
        line_no = lines_before + offset + 1
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return BronzeFileError(
                f"{file.relative}: line {line_no}: not valid JSON at column {exc.colno}: {exc.msg}")
        if not isinstance(record, dict):
            return BronzeFileError(f"{file.relative}: line {line_no}: not a JSON object")
        missing = [name for name in (*file.table.column_names, *COPIED_EXTRA) if name not in record]
        if missing:
            return BronzeFileError(f"{file.relative}: line {line_no}: missing field {missing[0]!r}")
    return BronzeFileError(f"{file.relative}: a line could not be read")  # not reached
