"""The lines of a bronze file that load cannot store exactly, set aside with their reasons.

`<bronze>/_rejected/load/<the file's own path>`, one JSON object per line: `_file`, `_line`,
`_reject_reason`, `_raw` (the line as read; bytes that are not UTF-8 as \\x escapes) and
`_quarantined_at`. Written complete or not at all, before the transaction that loads the
file's other lines commits; a load run again after a crash writes it again, the same.
"""

from __future__ import annotations

from datetime import UTC, datetime

from retailctl.bronze_files import QUARANTINE
from retailctl.bronze_store import Writer
from retailctl.load.files import BronzeFile


class Quarantine:
    """The quarantined lines of one file; `refused` holds lines PostgreSQL refused on an
    earlier try (the checks should catch everything first: this is the safety net)."""

    def __init__(self, file: BronzeFile) -> None:
        self.file = file
        self.relative = f"{QUARANTINE}/{file.relative}"  # in the file's own store
        self.name = file.relative.rsplit("/", 1)[-1]
        self.refused: dict[int, str] = {}
        self.lines = 0
        self.first: str = ""  # "line N: reason" of the first quarantined line
        self._out: Writer | None = None

    def start(self) -> None:
        """Begin (again): nothing written yet."""
        self.abort()
        self.lines, self.first = 0, ""

    def add(self, line_no: int, reason: str, raw: bytes) -> None:
        if self._out is None:
            self._out = self.file.store.writer(self.relative)
        self._out.write(
            {
                "_file": self.file.relative,
                "_line": line_no,
                "_reject_reason": reason,
                "_raw": raw.decode("utf-8", "backslashreplace"),
                "_quarantined_at": datetime.now(UTC).isoformat(),
            }
        )
        self.lines += 1
        self.first = self.first or f"line {line_no}: {reason}"

    def commit(self) -> None:
        if self._out is not None:
            self._out.commit()
            self._out = None

    def abort(self) -> None:
        if self._out is not None:
            self._out.abort()
            self._out = None
