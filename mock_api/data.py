"""Deterministic retail data, generated per record on demand (no list of a million sales).

Every record is a pure function of (seed, entity, index), so two servers with one seed serve
byte-identical pages and a page costs the same at sale 1 as at sale 1,000,000.
"""

from __future__ import annotations

import bisect
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in
           ((0, 0), (1, 0), (2, 0), (-5, 0), (5, 30), (-3, 0), (9, 0))]
DISCOUNTS = (Decimal(0), Decimal(0), Decimal(0), Decimal("0.05"), Decimal("0.10"), Decimal("0.25"))
ADJECTIVES = ("Classic", "Organic", "Crème", "Smoky", "Jalapeño", "Nordic", "Deluxe", "Tiny",
              "Crunchy", "Señorita", "Golden", "Zesty")
NOUNS = ("Coffee Beans", "Tea", "Chocolate", "Crisps", "Salsa", "Olive Oil", "Pasta", "Müsli",
         "Soap", "Candle", "Notebook", "Socks")
SUPPLIERS = ("Müller GmbH", "Sørensen A/S", "Acme Foods", "Nakamura 株式会社", "Łódź Trading",
             "Blue Harbor Ltd", "Café do Brasil", "Green Valley Co")
FIRST_NAMES = ("ana", "bjorn", "chloe", "dmitri", "elif", "femi", "guo", "hana", "ines", "jose")
DOMAINS = ("example.com", "mail.test", "correo.example", "post.example")


@dataclass(frozen=True)
class DataConfig:
    """What the generated source looks like; every field is a `retailctl api serve` option."""

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


class RetailData:
    """The generated source; sale index k (0-based) has id `sale_id(k)`."""

    def __init__(self, config: DataConfig, started: float | None = None) -> None:
        self.config = config
        self.started = time.time() if started is None else started
        self._products = [self._product(i) for i in range(config.products)]
        self._unit_amounts = [Decimal(str(p["unit_amount"])) for p in self._products]
        self._customer_ids = [f"C{i + 1:06d}" for i in range(config.customers)]

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
        return self.config.products - self.config.hidden_products

    def product(self, i: int) -> dict[str, Any]:
        record = dict(self._products[i])
        if self._broken("product", i):
            record["unit_amount"] = -1.0
        return record

    def customer_count(self) -> int:
        return self.config.customers

    def customer(self, i: int) -> dict[str, Any]:
        rng = self._rng("customer", i)
        name = f"{rng.choice(FIRST_NAMES)}.{i + 1}"
        emails = [f"{name}@{rng.choice(DOMAINS)}" for _ in range(rng.randint(0, 3))]
        if self.config.customer_version and i % 10 == 0:
            emails = [f"{name}.v{self.config.customer_version}@example.com", *emails[:1]]
        phones = [f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
                  for _ in range(rng.randint(0, 3))]
        record: dict[str, Any] = {"customer_id": self._customer_ids[i], "emails": emails,
                                  "phone_numbers": phones}
        if i % 7 == 0:
            record["loyalty_tier"] = rng.choice(("bronze", "silver", "gold"))  # an extra field
        if self._broken("customer", i):
            record["emails"] = "not-a-list"
        return record

    def _broken(self, kind: str, i: int) -> bool:
        rate = self.config.invalid_rate
        return rate > 0 and self._rng(f"broken-{kind}", i).random() < rate

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
        config = self.config
        rng = self._rng("sale", k)
        sale_id = self.sale_id(k)
        if k < config.sales:
            moment = EPOCH + timedelta(seconds=(k + rng.random()) * config.seconds_per_sale)
        else:  # a live sale: stamped when it appeared
            moment = datetime.fromtimestamp(
                self.started + (k - config.sales + 1) * 60 / config.live_rate_per_min, UTC)
        if rng.random() < config.backdated_rate:
            moment -= timedelta(days=rng.randint(2, 6))
        items = []
        for _ in range(rng.randint(1, 5)):
            product = rng.randrange(config.products)
            quantity = rng.randint(1, 5)
            discount = rng.choice(DISCOUNTS)
            amount = (self._unit_amounts[product] * quantity * (1 - discount)).quantize(
                CENT, rounding=ROUND_HALF_UP)
            items.append({"product_sku": f"SKU-{product + 1:05d}", "quantity": quantity,
                          "amount": amount})
        total = sum((item["amount"] for item in items), Decimal(0))
        if config.inconsistent_rate and rng.random() < config.inconsistent_rate:
            total += CENT
        for item in items:
            item["amount"] = float(item["amount"])
        sale: dict[str, Any] = {
            "id": sale_id,
            "datetime": moment.astimezone(rng.choice(OFFSETS)).isoformat(timespec="seconds"),
            "total_amount": float(total),
            "customer_id": self._customer_ids[rng.randrange(config.customers)],
            "items": items,
        }
        if self._broken("sale", k):
            _break_sale(sale, rng)
        return sale


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
