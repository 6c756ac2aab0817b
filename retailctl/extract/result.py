"""What extracting one source entity did, and its row in meta.extract_log."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from retailctl.store import state


@dataclass
class EntityResult:
    """What extracting one source entity did, for the summary line, --json and the history."""

    entity: str
    records: int = 0  # valid source records written to bronze (sales: sales, not lines)
    lines: int = 0
    rejected: int = 0
    inconsistent: int = 0
    duplicates: int = 0
    out_of_order: int = 0  # sales served with an id below an earlier one of their page
    pages: int = 0
    files: list[str] = field(default_factory=list)
    # snapshots: True when identical to the last one (no file written); sales: how many sales
    # the lookback read again unchanged (not written)
    unchanged: int = False
    cursor_from: int | None = None
    cursor_to: int | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the entity failed (the others still ran): why
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.entity}: {self.records} records"]
        if self.entity == "sales":
            parts = [
                f"sales: {self.records} sales, {self.lines} lines",
                f"cursor {self.cursor_from} -> {self.cursor_to}",
            ]
            parts += [f"{self.unchanged} re-read unchanged"] if self.unchanged else []
        parts += [f"{self.rejected} rejected", f"{len(self.files)} file(s)"]
        if self.inconsistent:
            parts.append(f"{self.inconsistent} inconsistent totals")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates dropped")
        if self.out_of_order:
            parts.append(f"{self.out_of_order} out-of-order ids")
        if self.unchanged and self.entity != "sales":
            parts.append("unchanged since the last snapshot, no file written")
        parts.append(f"{self.seconds:.1f}s ({rate:,.0f}/s)")
        if self.error:
            parts.append("FAILED (see the error)")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_result(conn: psycopg.Connection, result: EntityResult) -> None:
    """The entity's line in meta.extract_log (rejects, inconsistencies, warnings)."""
    notes = [*result.warnings, *([f"failed: {result.error}"] if result.error else [])]
    state.log_extract(
        conn,
        result.entity,
        result.records,
        result.rejected,
        result.inconsistent,
        len(result.files),
        "; ".join(notes),
    )
