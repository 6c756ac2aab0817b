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

    def summary(self) -> str:
        return (f"{self.table}: {self.files} file(s), {self.rows} rows: {self.inserted} inserted, "
                f"{self.updated} updated, {self.unchanged} unchanged")


@dataclass
class LoadResult:
    tables: dict[str, TableResult] = field(
        default_factory=lambda: {t.name: TableResult(t.name) for t in TABLES})
    pending: list[str] = field(default_factory=list)  # with --dry-run: what would load
    found: int = 0  # bronze files found, loaded before or not: 0 means nothing was extracted
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
