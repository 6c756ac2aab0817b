"""Deterministic retail data, generated per record on demand (no list of a million sales).

Every record is a pure function of (seed, entity, index), so two servers with one seed serve
byte-identical pages and a page costs the same at sale 1 as at sale 1,000,000.

The source can also change its past, as a real one does: rounds of corrections rewrite
published sales (another customer, another day, a line removed, a quantity changed), and
products and customers can be delisted (gone from their lists, still named by old sales) and
relisted. Both are seeded, and both show through `sale(k)`, `listed_products()` and
`listed_customers()`: the ground truth a test computes is what the server serves.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

CENT = Decimal("0.01")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
OFFSETS = [
    timezone(timedelta(hours=h, minutes=m))
    for h, m in ((0, 0), (1, 0), (2, 0), (-5, 0), (5, 30), (-3, 0), (9, 0))
]
DISCOUNTS = (Decimal(0), Decimal(0), Decimal(0), Decimal("0.05"), Decimal("0.10"), Decimal("0.25"))
ADJECTIVES = (
    "Classic",
    "Organic",
    "Crème",
    "Smoky",
    "Jalapeño",
    "Nordic",
    "Deluxe",
    "Tiny",
    "Crunchy",
    "Señorita",
    "Golden",
    "Zesty",
)
NOUNS = (
    "Coffee Beans",
    "Tea",
    "Chocolate",
    "Crisps",
    "Salsa",
    "Olive Oil",
    "Pasta",
    "Müsli",
    "Soap",
    "Candle",
    "Notebook",
    "Socks",
)
SUPPLIERS = (
    "Müller GmbH",
    "Sørensen A/S",
    "Acme Foods",
    "Nakamura 株式会社",
    "Łódź Trading",
    "Blue Harbor Ltd",
    "Café do Brasil",
    "Green Valley Co",
)
FIRST_NAMES = ("ana", "bjorn", "chloe", "dmitri", "elif", "femi", "guo", "hana", "ines", "jose")
DOMAINS = ("example.com", "mail.test", "correo.example", "post.example")
# What a correction does to a sale; a round hands them out in turn, so a round of 4 or more
# corrected sales shows each. A sale of one line gets "quantity" instead of "line_removed".
CORRECTION_KINDS = ("customer", "day", "line_removed", "quantity")
DAY_SHIFTS = (-2, -1, 1, 2)  # whole days: the UTC day always changes


@dataclass(frozen=True)
class DataConfig:
    """What the generated source looks like; every field is a `retailctl api serve` option
    (`delisted_*` as `--delist-*`)."""

    seed: int = 42
    customers: int = 500
    products: int = 200
    sales: int = 10_000
    seconds_per_sale: float = 60.0  # sale k is dated about k minutes after the epoch
    live_rate_per_min: float = 0.0
    gap_every: int = 0  # after every N sales, skip 3 ids (0 = dense ids)
    invalid_rate: float = 0.0  # share of records served broken
    inconsistent_rate: float = 0.0  # share of sales whose total differs from their lines
    backdated_rate: float = 0.02  # share of sales dated days before their neighbours
    hidden_products: int = 0  # the last N products are sold but missing from /products
    customer_version: int = 0  # bump to change some customers' emails
    corrections: int = 0  # sales corrected per round (0 = the source never changes its past)
    correction_version: int = 0  # rounds 0..version are applied: bump for one more round
    correction_window: int | None = None  # correct only among the last N sales (None = any)
    delisted_products: int = 0  # this many products (a seeded choice) gone from /products
    delisted_customers: int = 0  # likewise from /customers


@dataclass(frozen=True)
class Correction:
    """One correction of one sale, in round `round`."""

    round: int
    index: int  # the sale's index k
    sale_id: int
    kind: str  # one of CORRECTION_KINDS


class RetailData:
    """The generated source; sale index k (0-based) has id `sale_id(k)`."""

    def __init__(self, config: DataConfig, started: float | None = None) -> None:
        self.config = config
        self.started = time.time() if started is None else started
        self._products = [self._product(i) for i in range(config.products)]
        self._unit_amounts = [Decimal(str(p["unit_amount"])) for p in self._products]
        self._customer_ids = [f"C{i + 1:06d}" for i in range(config.customers)]
        self.rounds = 0  # correction rounds applied so far
        self._corrections: dict[int, list[Correction]] = {}  # by sale index, oldest first
        self._delisted_products: frozenset[int] = frozenset()
        self._delisted_customers: frozenset[int] = frozenset()
        self._listed_products: Sequence[int] = range(0)
        self._listed_customers: Sequence[int] = range(0)
        self.delist(products=config.delisted_products, customers=config.delisted_customers)
        if config.corrections:
            for _ in range(config.correction_version + 1):
                self.correct(config.corrections, config.correction_window, end=config.sales)

    # -- products and customers ---------------------------------------------------------

    def _rng(self, kind: str, index: int) -> random.Random:
        return random.Random(f"{self.config.seed}:{kind}:{index}")

    def _product(self, i: int) -> dict[str, Any]:
        rng = self._rng("product", i)
        cents = rng.randint(50, 50_000)
        return {
            "product_sku": f"SKU-{i + 1:05d}",
            "description": f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}",
            "unit_amount": cents / 100,
            "supplier": rng.choice(SUPPLIERS),
        }

    def product_count(self) -> int:
        return len(self._listed_products)

    def listed_products(self) -> Sequence[int]:
        """The indexes /products lists, in order: neither hidden nor delisted."""
        return self._listed_products

    def product(self, i: int) -> dict[str, Any]:
        record = dict(self._products[i])
        if self._broken("product", i):
            record["unit_amount"] = -1.0
        return record

    def customer_count(self) -> int:
        return len(self._listed_customers)

    def listed_customers(self) -> Sequence[int]:
        """The indexes /customers lists, in order: not delisted."""
        return self._listed_customers

    def customer(self, i: int) -> dict[str, Any]:
        rng = self._rng("customer", i)
        name = f"{rng.choice(FIRST_NAMES)}.{i + 1}"
        emails = [f"{name}@{rng.choice(DOMAINS)}" for _ in range(rng.randint(0, 3))]
        if self.config.customer_version and i % 10 == 0:
            emails = [f"{name}.v{self.config.customer_version}@example.com", *emails[:1]]
        phones = [
            f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
            for _ in range(rng.randint(0, 3))
        ]
        record: dict[str, Any] = {
            "customer_id": self._customer_ids[i],
            "emails": emails,
            "phone_numbers": phones,
        }
        if i % 7 == 0:
            record["loyalty_tier"] = rng.choice(("bronze", "silver", "gold"))  # an extra field
        if self._broken("customer", i):
            record["emails"] = "not-a-list"
        return record

    def _broken(self, kind: str, i: int) -> bool:
        rate = self.config.invalid_rate
        return rate > 0 and self._rng(f"broken-{kind}", i).random() < rate

    # -- delisting -----------------------------------------------------------------------

    def delist(self, *, products: int | None = None, customers: int | None = None) -> None:
        """Delist exactly this many products / customers (None: leave as is; 0: relist all).

        The first N of a seeded order: delisting more keeps the ones delisted before, and
        delisting fewer relists the last ones. Sales keep naming them, as old sales would.
        """
        if products is not None:
            pool = range(self.config.products - self.config.hidden_products)
            self._delisted_products = self._first_of_order("delist-products", len(pool), products)
            self._listed_products = _without(pool, self._delisted_products)
        if customers is not None:
            pool = range(self.config.customers)
            self._delisted_customers = self._first_of_order("delist-customers", len(pool), customers)
            self._listed_customers = _without(pool, self._delisted_customers)

    def delisted_products(self) -> list[int]:
        return sorted(self._delisted_products)

    def delisted_customers(self) -> list[int]:
        return sorted(self._delisted_customers)

    def _first_of_order(self, kind: str, size: int, count: int) -> frozenset[int]:
        if count <= 0:
            return frozenset()
        order = random.Random(f"{self.config.seed}:{kind}").sample(range(size), size)
        return frozenset(order[:count])

    # -- sales --------------------------------------------------------------------------

    def sale_count(self, now: float | None = None) -> int:
        """Sales available now: the base size plus those that arrived live since start."""
        count = self.config.sales
        if self.config.live_rate_per_min > 0:
            elapsed_min = ((time.time() if now is None else now) - self.started) / 60
            count += int(elapsed_min * self.config.live_rate_per_min)
        return count

    def sale_id(self, k: int) -> int:
        gap = self.config.gap_every
        return k + 1 + (3 * (k // gap) if gap else 0)

    def first_index_at_or_after(self, start_id: int, count: int) -> int:
        """The smallest index k < count whose id is >= start_id (count if none)."""
        if not self.config.gap_every:
            return min(max(start_id - 1, 0), count)
        return bisect.bisect_left(range(count), start_id, key=self.sale_id)

    def sale(self, k: int) -> dict[str, Any]:
        """Sale k as served now: generated, then every correction of it applied in order."""
        draft, rng = self._draft(k)
        items = []
        for line in draft.lines:
            amount = (self._unit_amounts[line.product] * line.quantity * (1 - line.discount)).quantize(
                CENT, rounding=ROUND_HALF_UP
            )
            items.append(
                {"product_sku": f"SKU-{line.product + 1:05d}", "quantity": line.quantity, "amount": amount}
            )
        total = sum((item["amount"] for item in items), Decimal(0))
        if draft.inconsistent:
            total += CENT
        for item in items:
            item["amount"] = float(item["amount"])
        sale: dict[str, Any] = {
            "id": self.sale_id(k),
            "datetime": draft.moment.astimezone(draft.offset).isoformat(timespec="seconds"),
            "total_amount": float(total),
            "customer_id": self._customer_ids[draft.customer],
            "items": items,
        }
        if self._broken("sale", k):
            _break_sale(sale, rng)
        return sale

    def _draft(self, k: int) -> tuple[_Draft, random.Random]:
        """Sale k's content, corrections applied; and its generator, for `_break_sale`."""
        config = self.config
        rng = self._rng("sale", k)
        if k < config.sales:
            moment = EPOCH + timedelta(seconds=(k + rng.random()) * config.seconds_per_sale)
        else:  # a live sale: stamped when it appeared
            moment = datetime.fromtimestamp(
                self.started + (k - config.sales + 1) * 60 / config.live_rate_per_min, UTC
            )
        if rng.random() < config.backdated_rate:
            moment -= timedelta(days=rng.randint(2, 6))
        lines = [
            _Line(rng.randrange(config.products), rng.randint(1, 5), rng.choice(DISCOUNTS))
            for _ in range(rng.randint(1, 5))
        ]
        inconsistent = bool(config.inconsistent_rate) and rng.random() < config.inconsistent_rate
        offset = rng.choice(OFFSETS)
        draft = _Draft(moment, rng.randrange(config.customers), lines, inconsistent, offset)
        for correction in self._corrections.get(k, ()):
            self._apply(correction, draft)
        return draft, rng

    # -- corrections --------------------------------------------------------------------

    def correct(self, count: int, window: int | None = None, *, end: int | None = None) -> list[Correction]:
        """One more round: correct `count` sales among the last `window` (None: any) of the
        first `end` sales (default: all available now). Seeded by (seed, round)."""
        end = self.sale_count() if end is None else end
        first = max(0, end - window) if window else 0
        number = self.rounds
        self.rounds += 1
        rng = random.Random(f"{self.config.seed}:corrections:{number}")
        picked = sorted(rng.sample(range(first, end), min(count, end - first)))
        done = []
        for turn, k in enumerate(picked):
            kind = CORRECTION_KINDS[(turn + number) % len(CORRECTION_KINDS)]
            if kind == "line_removed" and len(self._draft(k)[0].lines) < 2:
                kind = "quantity"  # a sale keeps at least one line
            correction = Correction(number, k, self.sale_id(k), kind)
            self._corrections.setdefault(k, []).append(correction)
            done.append(correction)
        return done

    def corrections(self) -> list[Correction]:
        """Every correction applied, by sale index then round."""
        return [c for k in sorted(self._corrections) for c in self._corrections[k]]

    def _apply(self, correction: Correction, draft: _Draft) -> None:
        rng = random.Random(f"{self.config.seed}:correct:{correction.round}:{correction.index}")
        if correction.kind == "customer" and self.config.customers > 1:
            other = rng.randrange(self.config.customers - 1)
            draft.customer = other + (other >= draft.customer)
        elif correction.kind == "day":
            draft.moment += timedelta(days=rng.choice(DAY_SHIFTS))
        elif correction.kind == "line_removed" and len(draft.lines) > 1:
            del draft.lines[rng.randrange(len(draft.lines))]
        else:  # quantity: one line's quantity and so its amount
            at = rng.randrange(len(draft.lines))
            line = draft.lines[at]
            quantity = rng.choice([q for q in range(1, 6) if q != line.quantity])
            draft.lines[at] = _Line(line.product, quantity, line.discount)


def _without(pool: range, removed: frozenset[int]) -> Sequence[int]:
    """`pool` less `removed`, in order; the range itself (no list) when nothing is removed."""
    return [i for i in pool if i not in removed] if removed else pool


class _Line(NamedTuple):  # a tuple: made three times per sale served
    product: int  # index
    quantity: int
    discount: Decimal


@dataclass
class _Draft:
    """A sale before it is served: what corrections change."""

    moment: datetime
    customer: int  # index
    lines: list[_Line]
    inconsistent: bool  # served with a total a cent off its lines
    offset: timezone  # the UTC offset the datetime is written in


def _break_sale(sale: dict[str, Any], rng: random.Random) -> None:
    """Serve one of the faults a real source shows."""
    fault = rng.randrange(5)
    if fault == 0:
        sale["items"][0]["quantity"] = 0
    elif fault == 1:
        sale["items"][-1]["amount"] = -5.0
    elif fault == 2:
        del sale["customer_id"]
    elif fault == 3:
        sale["datetime"] = "yesterday at noon"
    else:
        sale["items"] = []
