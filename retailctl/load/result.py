"""What a load did, per Silver table, for the summary line, --json and the history."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from retailctl.load.tables import TABLES


@dataclass
class TableResult:
    table: str
    files: int = 0
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    quarantined: int = 0  # lines set aside under _rejected/load, with their reasons
    deleted: int = 0  # sale lines a re-read sale no longer has; snapshot keys marked delisted
    problems: list[str] = field(default_factory=list)  # one line per file with quarantined lines

    def summary(self) -> str:
        line = (
            f"{self.table}: {self.files} file(s), {self.rows} rows: {self.inserted} inserted, "
            f"{self.updated} updated, {self.unchanged} unchanged"
        )
        line += f", {self.deleted} deleted" if self.deleted else ""
        return line + (f", {self.quarantined} quarantined" if self.quarantined else "")


@dataclass
class LoadResult:
    tables: dict[str, TableResult] = field(
        default_factory=lambda: {t.name: TableResult(t.name) for t in TABLES}
    )
    pending: list[str] = field(default_factory=list)  # with --dry-run: what would load
    found: int = 0  # bronze files found, loaded before or not: 0 means nothing was extracted
    errors: list[str] = field(default_factory=list)  # one line per file not loaded
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def quarantined(self) -> list[str]:
        """One line per loaded file with quarantined lines."""
        return [problem for table in self.tables.values() for problem in table.problems]

    def failure(self) -> str | None:
        """What makes this load a failed step (exit 1): files not loaded, lines quarantined."""
        parts = []
        if self.errors:
            parts.append(f"{len(self.errors)} bronze file(s) not loaded; the others were")
        if self.quarantined:
            lines = sum(table.quarantined for table in self.tables.values())
            parts.append(f"{lines} line(s) quarantined; the others loaded")
        return "; ".join(parts) or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
