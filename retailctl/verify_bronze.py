"""verify's reference: the latest version of every sale in bronze, summed per UTC day.

The latest version of a sale is the one in the file written last (file names start with a
UTC timestamp); its lines are those of the same batch, the file of the same name under
sales_product. Files are read newest first, a line at a time, so a sale counts where it is
first met and is skipped after: memory holds a bit per sale id (IdSet) and one batch's sale
days and amounts, never a map of every sale. Amounts are summed as Decimal from the number
the source wrote, to the cent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from retailctl.bronze_files import REJECTED, parse_file_name
from retailctl.bronze_store import BronzeStore, open_bronze
from retailctl.errors import BronzeFileError

Day = date | None  # None: lines whose sale has no header (silver only)


@dataclass
class Figures:
    """One day of one layer: sales, lines, the sum of line amounts."""

    sales: int = 0
    lines: int = 0
    amount: Decimal = field(default_factory=Decimal)

    def key(self) -> tuple[int, int, Decimal]:
        return self.sales, self.lines, self.amount

    def to_dict(self) -> dict[str, Any]:
        return {"sales": self.sales, "lines": self.lines, "amount": money(self.amount)}


def money(amount: Decimal) -> str:
    """Exact, with at least two decimals: 12.5 -> '12.50', 0.125 stays '0.125'."""
    cents = amount.quantize(Decimal("0.01"))
    return str(cents if cents == amount else amount)


class IdSet:
    """Sale ids seen: a bitmap per block of 65,536 ids. About one bit per id where ids are
    dense, as a source's sale ids are (1M sales: 128 KB); a set of ints takes ~60 bytes each."""

    def __init__(self) -> None:
        self._blocks: dict[int, bytearray] = {}
        self.count = 0

    def add(self, value: int) -> bool:
        """Add `value`; False when it was there already."""
        block = self._blocks.get(value >> 16)
        if block is None:
            block = self._blocks[value >> 16] = bytearray(8192)
        offset = value & 0xFFFF
        bit = 1 << (offset & 7)
        if block[offset >> 3] & bit:
            return False
        block[offset >> 3] |= bit
        self.count += 1
        return True


@dataclass
class BronzeScan:
    days: dict[Day, Figures]
    files: int  # sales_customer files read
    sales: int  # distinct sales met, on any day
    listed: set[str] = field(default_factory=set)  # the sales_customer files there are


def scan_bronze(bronze: str | Path | BronzeStore, since: date | None = None) -> BronzeScan:
    """The latest version of every sale, summed per UTC day of its datetime (from `since`)."""
    store = open_bronze(bronze)
    headers = _files_by_name(store, "sales_customer")
    lines = _files_by_name(store, "sales_product")
    seen = IdSet()
    days: dict[Day, Figures] = {}
    utc_day = _UtcDays()
    for name in sorted(headers, reverse=True):  # newest first
        latest, repeated = _sale_days(headers[name], store, utc_day)
        claimed: dict[int, date] = {}  # the sales whose latest version is this batch's
        for sale_id, day in latest.items():
            if seen.add(sale_id) and (since is None or day >= since):
                claimed[sale_id] = day
        for day in claimed.values():
            days.setdefault(day, Figures()).sales += 1
        if claimed and name in lines:
            for day, amounts in _line_amounts(lines[name], store, claimed, repeated).items():
                figures = days[day]
                figures.lines += len(amounts)
                figures.amount += _sum(amounts, lines[name], store)
    return BronzeScan(days, len(headers), seen.count, set(headers.values()))


def _files_by_name(bronze: BronzeStore, dataset: str) -> dict[str, str]:
    """File name -> relative name (a name extract writes, in its partition)."""
    return {
        entry.name: entry.relative
        for entry in bronze.list(dataset)
        if entry.problem is None and parse_file_name(entry.name) is not None
    }


def _records(path: str, store: BronzeStore) -> Iterator[Any]:
    """The records of a file, one line at a time; a line that is not JSON is named."""
    loads = orjson.loads
    with store.open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BronzeFileError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None


def _bad_record(path: str, store: BronzeStore, fields: tuple[str, ...], what: str) -> BronzeFileError:
    """The first line that lacks a field (or else the file), named."""
    number = next(
        (
            n
            for n, record in enumerate(_records(path, store), start=1)
            if not isinstance(record, dict) or not all(f in record for f in fields)
        ),
        None,
    )
    where = f"line {number}" if number else "a line"
    return BronzeFileError(f"{path}: {where}: not a {what} ({', '.join(fields)} of the right types)")


class _UtcDays:
    """The UTC day of an ISO-8601 datetime with offset. With a whole-hour offset the day
    depends on the date, the hour and the offset only: those are cached, so most sales cost
    a slice and a lookup, not a parse. A file's sales are close in time, so a small cache,
    emptied when full, keeps nearly every hit and its memory flat."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._cache: dict[str, date] = {}

    def __call__(self, moment: str) -> date:
        # 2026-01-01T05:30:00+01:00 or 2026-01-01T05:30:00Z: key 2026-01-01T05+01:00
        whole_hour = (len(moment) == 25 and moment.endswith("00")) or (
            len(moment) == 20 and moment.endswith("Z")
        )
        if not whole_hour:
            return datetime.fromisoformat(moment).astimezone(UTC).date()
        key = moment[:13] + moment[19:]
        day = self._cache.get(key)
        if day is None:
            if len(self._cache) >= self.LIMIT:
                self._cache.clear()
            day = self._cache[key] = datetime.fromisoformat(moment).astimezone(UTC).date()
        return day


def _sale_days(path: str, store: BronzeStore, utc_day: _UtcDays) -> tuple[dict[int, date], bool]:
    """Sale id -> UTC day (the last line of an id wins, as in load); and whether an id
    repeats in the file (its lines then repeat too)."""
    found: dict[int, date] = {}
    count = 0
    try:
        for record in _records(path, store):
            found[record["id"]] = utc_day(record["datetime"])
            count += 1
    except (KeyError, TypeError):
        raise _bad_record(path, store, ("id", "datetime"), "sale header") from None
    except ValueError as exc:
        raise BronzeFileError(f"{path}: a datetime is not ISO-8601: {exc}") from None
    return found, len(found) < count


def _line_amounts(
    path: str, store: BronzeStore, claimed: dict[int, date], repeated: bool
) -> dict[date, list[Any]]:
    """The line amounts of the claimed sales, per day; with repeated sales, the last line of
    each (sale id, line no) only, as in load."""
    amounts: dict[date, list[Any]] = {}
    try:
        if not repeated:
            for record in _records(path, store):
                day = claimed.get(record["sale_id"])
                if day is not None:
                    amounts.setdefault(day, []).append(record["amount"])
            return amounts
        last = {
            (r["sale_id"], r["line_no"]): r["amount"]
            for r in _records(path, store)
            if r["sale_id"] in claimed
        }
    except (KeyError, TypeError):
        raise _bad_record(path, store, ("sale_id", "line_no", "amount"), "sale line") from None
    for (sale_id, _), amount in last.items():
        amounts.setdefault(claimed[sale_id], []).append(amount)
    return amounts


def _sum(amounts: list[Any], path: str, store: BronzeStore) -> Decimal:
    """Exact: each distinct number once, through its shortest repr (a float's is the source's
    literal, as load hands it to COPY), times how often it occurs; prices repeat a lot."""
    try:
        return sum((Decimal(repr(value)) * count for value, count in Counter(amounts).items()), Decimal(0))
    except (InvalidOperation, TypeError):
        raise BronzeFileError(f"{path}: an amount is not a number") from None


def rejected_sale_ids(bronze: str | Path | BronzeStore) -> set[int]:
    """Distinct ids of the sales extract rejected (few: a set is fine)."""
    store = open_bronze(bronze)
    ids = set()
    for entry in store.list(f"{REJECTED}/sales"):
        for record in _records(entry.relative, store):
            sale_id = record.get("id") if isinstance(record, dict) else None
            if isinstance(sale_id, int) and not isinstance(sale_id, bool):
                ids.add(sale_id)
    return ids
