"""Reading bronze files as batches of COPY rows, hashed on the way.

A file reads as a run of `Rows` (a read buffer's worth of lines each) closed by one `End` (its
sha256 and line count). Two ways:

- `read_ahead` (the fast path): every line parsed and picked for COPY, on a thread that runs
  ahead of the database across files. A line that does not parse, lacks a column or does not
  carry its file's `_ingestion_ts` and `_batch_id` makes the End `unclean`: the file is then
  read again the careful way.
- `read_checked` (the careful path): each line checked on its own (`checks`); a line that fails
  goes to the quarantine with its reason, the others into Rows.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, groupby
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from retailctl.load.checks import record_problem
from retailctl.load.files import READ_CHUNK, BronzeFile
from retailctl.load.quarantine import Quarantine
from retailctl.prefetch import prefetch

READ_AHEAD_BATCHES = 8  # bounded memory: at most this many batches parsed ahead
_STAMP = itemgetter(-2, -1)  # a COPY row ends with _ingestion_ts, _batch_id


@dataclass
class Rows:
    """COPY rows of one file; rows[i] is line first_line + i, or lines[i] when given."""

    file: BronzeFile
    rows: list[tuple[Any, ...]]
    first_line: int
    lines: array[int] | None = None  # the careful path skips lines: their numbers

    def line_of(self, index: int) -> int:
        return self.first_line + index if self.lines is None else self.lines[index]


@dataclass
class End:
    """The end of one file: its sha256 and line count; `unclean` when the fast path met a line
    it cannot take (read the file again, carefully)."""

    file: BronzeFile
    sha256: str
    lines: int
    unclean: bool = False


Item = Rows | End


def read_file(file: BronzeFile) -> Iterator[Item]:
    """The fast path: the file's rows in order, then its End."""
    pick = file.table.pick
    loads = orjson.loads
    stamp = {(file.name.ingestion_ts, file.name.batch_id)}
    digest = hashlib.sha256()
    lines = 0
    for chunk, complete in _line_chunks(file, digest):
        try:
            rows = [pick(loads(raw)) for raw in chunk]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            complete = False
        if not complete or (rows and set(map(_STAMP, rows)) != stamp):
            yield End(file, "", lines, unclean=True)
            return
        yield Rows(file, rows, lines + 1)
        lines += len(chunk)
    yield End(file, digest.hexdigest(), lines)


def read_ahead(files: list[BronzeFile]) -> Iterator[tuple[BronzeFile, Iterator[Item]]]:
    """(file, its items) per file, in order; parsing runs ahead across file boundaries.

    A consumer that leaves a file's items unfinished skips the rest of them (groupby does).
    """
    stream = prefetch(chain.from_iterable(map(read_file, files)), depth=READ_AHEAD_BATCHES)
    return groupby(stream, key=attrgetter("file"))


def read_checked(file: BronzeFile, quarantine: Quarantine) -> Iterator[Item]:
    """The careful path: the rows of the lines that pass the checks (and that PostgreSQL did
    not refuse before: `quarantine.refused`); the others into the quarantine."""
    pick = file.table.pick
    digest = hashlib.sha256()
    line_no = 0
    for chunk, complete in _line_chunks(file, digest):
        rows: list[tuple[Any, ...]] = []
        numbers = array("q")
        for raw in chunk:
            line_no += 1
            reason = quarantine.refused.get(line_no) or _line_problem(file, raw, complete)
            if reason:
                quarantine.add(line_no, reason, raw)
                continue
            rows.append(pick(orjson.loads(raw)))
            numbers.append(line_no)
        yield Rows(file, rows, numbers[0] if numbers else line_no, numbers)
    yield End(file, digest.hexdigest(), line_no)


def _line_problem(file: BronzeFile, raw: bytes, complete: bool) -> str | None:
    if not complete:
        return "truncated (no end of line)"
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON at column {exc.colno}: {exc.msg}"
    return record_problem(file, record)


def _line_chunks(file: BronzeFile, digest: Any) -> Iterator[tuple[list[bytes], bool]]:
    """(lines, complete) a read buffer's worth at a time, hashing the bytes on the way; a last
    line without its end of line comes alone, not complete."""
    tail = b""
    with file.open() as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            yield lines, True
    if tail.strip():
        yield [tail], False
