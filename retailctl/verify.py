"""`verify`: prove that bronze, silver, the fact and the mart agree, day by day.

The reference is the latest version of every sale in bronze (verify_bronze). For each UTC day
of a sale's datetime, every layer must hold the same number of sales, of lines and the same
sum of line amounts, to the cent (Decimal and numeric, never float). dbt's tests compare gold
with silver; this also holds both to the files the source sent, so a layer wrong the same way
as another is still caught. The database's aggregates run on a second connection while Python
reads bronze: Postgres works on one core, the parsing on the other. Where an API is
configured, its `total_items` is checked too (verify_source).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg

from retailctl import verify_source
from retailctl.bronze_files import parse_file_name
from retailctl.bronze_store import open_bronze
from retailctl.config import Settings
from retailctl.errors import LayersDisagree
from retailctl.store.db import Database
from retailctl.verify_bronze import Day, Figures, money, rejected_sale_ids, scan_bronze

EARLIEST = date(1, 1, 1)  # `since` when there is none
MAX_DAYS_NAMED = 5  # in the one-line failure message

# Per UTC day: (day, sales) for headers, (day, lines, amount) for lines. A silver line whose
# sale has no header has no day (None), and is a difference of its own.
SILVER_SALES_BY_DAY = """
select (datetime at time zone 'UTC')::date as day, count(*) as sales
from silver.sales_customer
where (datetime at time zone 'UTC')::date >= %(since)s
group by 1
"""
SILVER_LINES_BY_DAY = """
select (headers.datetime at time zone 'UTC')::date as day, count(*) as lines,
       sum(lines.amount) as amount
from silver.sales_product as lines
left join silver.sales_customer as headers on headers.id = lines.sale_id
where headers.id is null or (headers.datetime at time zone 'UTC')::date >= %(since)s
group by 1
"""
FACT_BY_DAY = """
select day, count(distinct sale_id) as sales, count(*) as lines, sum(item_amount) as amount
from gold.sales_item
where day >= %(since)s
group by day
"""
MART_BY_DAY = """
select day, sum(n_sales)::bigint as sales, sum(n_items)::bigint as lines,
       sum(total_revenue) as amount
from gold.mart_sales_by_customer
where day >= %(since)s
group by day
"""
# Aggregates over millions of rows: in memory rather than spilled to disk; no JIT.
ROOM_TO_AGGREGATE = "select set_config('work_mem', '128MB', false), set_config('jit', 'off', false)"
TABLE_EXISTS = "select to_regclass(%s) is not null"
LOADED_SALES_FILES = "select path from meta.loaded_files where entity = 'sales_customer'"
GOLD_LAYERS = {"fact": ("gold.sales_item", FACT_BY_DAY), "mart": ("gold.mart_sales_by_customer", MART_BY_DAY)}


def _day_order(day: Day) -> tuple[bool, date]:
    return day is not None, day or EARLIEST


@dataclass
class Difference:
    day: Day
    layer: str
    figures: Figures
    reference: Figures  # bronze's

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "layer": self.layer,
            **self.figures.to_dict(),
            "bronze": self.reference.to_dict(),
        }


@dataclass
class VerifyResult:
    since: date | None
    reference: dict[Day, Figures]  # bronze
    layers: dict[str, dict[Day, Figures]]  # silver, fact, mart (those that exist)
    missing: list[str]  # one line per layer whose table does not exist
    source: verify_source.SourceCheck
    bronze_files: int = 0
    pruned_files: int = 0  # loaded sales files `bronze prune` deleted
    complete_since: date | None = None  # after a prune, bronze is whole from this day
    seconds: dict[str, float] = field(default_factory=dict)
    differences: list[Difference] = field(init=False)

    def __post_init__(self) -> None:
        self.differences = [
            Difference(day, layer, figures.get(day, Figures()), self.reference.get(day, Figures()))
            for layer, figures in self.layers.items()
            for day in sorted(set(self.reference) | set(figures), key=_day_order)
            if figures.get(day, Figures()).key() != self.reference.get(day, Figures()).key()
        ]

    @property
    def days(self) -> list[date]:
        """Every day any layer has, in order."""
        days = set(self.reference).union(*self.layers.values())
        return sorted(day for day in days if day is not None)

    @property
    def ok(self) -> bool:
        return (
            not self.differences and not (self.missing and self.reference) and self.source.status != "differ"
        )

    def total(self, days: dict[Day, Figures]) -> Figures:
        total = Figures()
        for figures in days.values():
            total.sales += figures.sales
            total.lines += figures.lines
            total.amount += figures.amount
        return total

    def summary(self) -> str:
        """One line: what agrees, or every problem found."""
        if self.ok:
            total = self.total(self.reference)
            return (
                f"all {len(self.days)} days agree across bronze, silver, fact and mart: "
                f"{total.sales} sales, {total.lines} lines, {money(total.amount)}"
            )
        problems = []
        differing = sorted({d.day for d in self.differences if d.day is not None})
        if differing:
            named = [
                f"{day} ({', '.join(d.layer for d in self.differences if d.day == day)})"
                for day in differing[:MAX_DAYS_NAMED]
            ]
            more = f" and {len(differing) - MAX_DAYS_NAMED} more" if len(differing) > MAX_DAYS_NAMED else ""
            problems.append(
                f"layers disagree on {len(differing)} of {len(self.days)} day(s): {', '.join(named)}{more}"
            )
        orphans = self.layers.get("silver", {}).get(None)
        if orphans:
            problems.append(f"silver holds {orphans.lines} line(s) whose sale has no header")
        if self.reference:
            problems += self.missing
        if self.source.status == "differ":
            problems.append(f"source: {self.source.detail}")
        return "; ".join(problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "since": self.since,
            "days": len(self.days),
            "differences": [d.to_dict() for d in self.differences],
            "missing": self.missing,
            "totals": {
                "bronze": self.total(self.reference).to_dict(),
                **{name: self.total(days).to_dict() for name, days in self.layers.items()},
            },
            "source": self.source.to_dict(),
            "bronze_files": self.bronze_files,
            "pruned_files": self.pruned_files,
            "complete_since": self.complete_since,
            "seconds": self.seconds,
        }


def raise_for_differences(result: VerifyResult) -> None:
    if not result.ok:
        raise LayersDisagree(result.summary(), details=result.to_dict())


def verify(database: Database, settings: Settings, since: date | None = None) -> VerifyResult:
    """Every layer per day against the bronze reference, and the source's count of sales."""
    started = time.monotonic()
    bronze = open_bronze(settings.bronze_location)
    aggregates = _Aggregates(database, since)
    with ThreadPoolExecutor(1, thread_name_prefix="verify-sql") as pool:
        in_database = pool.submit(aggregates.run)
        try:
            scan = scan_bronze(bronze, since)
            bronze_seconds = time.monotonic() - started
            in_database.result()
        except BaseException:  # SIGTERM, Ctrl-C, a bad file: stop the query too, not wait for it
            aggregates.cancel()
            raise
    with database.connect(autocommit=True, purpose="verify") as conn:
        pruned = _pruned_file_days(conn, scan.listed)
        source = verify_source.check(conn, settings, rejected_sale_ids(bronze))
    return VerifyResult(
        since=since,
        reference=scan.days,
        layers=aggregates.layers,
        missing=aggregates.missing,
        source=source,
        bronze_files=scan.files,
        pruned_files=len(pruned),
        complete_since=max(pruned) + timedelta(days=1) if pruned else None,
        seconds={
            "bronze": round(bronze_seconds, 3),
            "database": round(aggregates.seconds, 3),
            "total": round(time.monotonic() - started, 3),
        },
    )


def verify_whole_bronze(database: Database, settings: Settings) -> VerifyResult:
    """verify over the days bronze still holds whole (the full `retailctl test`): after a
    `bronze prune`, from the day after the newest pruned file, so pruning never fails it."""
    listed = {entry.relative for entry in open_bronze(settings.bronze_location).list("sales_customer")}
    with database.connect(autocommit=True, purpose="verify") as conn:
        pruned = _pruned_file_days(conn, listed)
    return verify(database, settings, max(pruned) + timedelta(days=1) if pruned else None)


class _Aggregates:
    """Each layer's figures per day, on a connection of its own (run on a worker thread); a
    layer whose table is missing is named instead."""

    def __init__(self, database: Database, since: date | None) -> None:
        self.database = database
        self.params = {"since": since or EARLIEST}
        self.layers: dict[str, dict[Day, Figures]] = {}
        self.missing: list[str] = []
        self.seconds = 0.0
        self._conn: psycopg.Connection | None = None
        self._cancelled = False

    def run(self) -> None:
        started = time.monotonic()
        with self.database.connect(autocommit=True, purpose="verify") as conn:
            self._conn = conn
            if self._cancelled:
                return
            conn.execute(ROOM_TO_AGGREGATE)
            silver: dict[Day, Figures] = {}
            for day, sales in conn.execute(SILVER_SALES_BY_DAY, self.params):
                silver[day] = Figures(sales=sales)
            for day, lines, amount in conn.execute(SILVER_LINES_BY_DAY, self.params):
                figures = silver.setdefault(day, Figures())
                figures.lines, figures.amount = lines, amount
            self.layers["silver"] = silver
            for layer, (table, query) in GOLD_LAYERS.items():
                if self._cancelled:
                    return
                if not _exists(conn, table):
                    self.missing.append(f"{layer}: {table} does not exist (run `retailctl transform`)")
                    continue
                self.layers[layer] = {
                    day: Figures(sales, lines, amount)
                    for day, sales, lines, amount in conn.execute(query, self.params)
                }
        self.seconds = time.monotonic() - started

    def cancel(self) -> None:
        """Stop: cancel the query in flight (called from another thread)."""
        self._cancelled = True
        if self._conn is not None and not self._conn.closed:
            self._conn.cancel_safe(timeout=5)


def _exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute(TABLE_EXISTS, (table,)).fetchone()
    return bool(row and row[0])


def _pruned_file_days(conn: psycopg.Connection, listed: set[str]) -> list[date]:
    """The write days of loaded sales files that `bronze prune` deleted since (not `listed`)."""
    days = []
    for (relative,) in conn.execute(LOADED_SALES_FILES):
        name = parse_file_name(relative.rsplit("/", 1)[-1])
        if name is not None and relative not in listed:
            days.append(name.written_at.date())
    return days
