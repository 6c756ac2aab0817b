"""Pure functions over source records: validate against the contract, split a sale.

A validator returns the reason a record is rejected, or None when it is valid. Numbers come
from orjson as int or float; a float is read through its shortest repr, which is exact for
money (up to 15 significant digits), so no arithmetic here ever runs on binary floats.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

ENTITIES = ("customers", "products", "sales")  # what extract reads, in this order
CUSTOMER_KEY = "customer_id"
PRODUCT_KEY = "product_sku"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def decimal_of(value: int | float) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def customer_reject_reason(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if not _is_text(record.get("customer_id")):
        return "customer_id missing or not a non-empty string"
    for field in ("emails", "phone_numbers"):
        if not _is_text_list(record.get(field)):
            return f"{field} missing or not a list of strings"
    return None


def product_reject_reason(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if not _is_text(record.get("product_sku")):
        return "product_sku missing or not a non-empty string"
    unit_amount = record.get("unit_amount")
    if not _is_number(unit_amount):
        return "unit_amount missing or not a number"
    if unit_amount < 0:
        return "unit_amount is negative"
    for field in ("description", "supplier"):
        if record.get(field) is not None and not isinstance(record[field], str):
            return f"{field} is not a string"
    return None


def _parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def sale_reject_reason(sale: Any) -> str | None:
    """Why a sale (header and every line: a sale is one unit) is rejected, or None."""
    if not isinstance(sale, dict):
        return "not a JSON object"
    sale_id = sale.get("id")
    if not isinstance(sale_id, int) or isinstance(sale_id, bool) or sale_id < 1:
        return "id missing or not a positive integer"
    if _parse_datetime(sale.get("datetime")) is None:
        return "datetime missing or not ISO-8601 with a UTC offset"
    total = sale.get("total_amount")
    if not _is_number(total) or total < 0:
        return "total_amount missing, not a number or negative"
    if not _is_text(sale.get("customer_id")):
        return "customer_id missing or not a non-empty string"
    items = sale.get("items")
    if not isinstance(items, list) or not items:
        return "items missing or empty: a sale has at least one line"
    for line_no, item in enumerate(items, start=1):
        reason = _line_reject_reason(item)
        if reason:
            return f"line {line_no}: {reason}"
    return None


def _line_reject_reason(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "not a JSON object"
    if not _is_text(item.get("product_sku")):
        return "product_sku missing or not a non-empty string"
    quantity = item.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        return "quantity missing or not an integer of at least 1"
    amount = item.get("amount")
    if not _is_number(amount) or amount < 0:
        return "amount missing, not a number or negative"
    return None


def sale_id_of(sale: Any) -> int | None:
    """The sale's id when it is an integer (valid or not), else None."""
    if isinstance(sale, dict):
        sale_id = sale.get("id")
        if isinstance(sale_id, int) and not isinstance(sale_id, bool):
            return sale_id
    return None


def is_inconsistent(sale: dict[str, Any]) -> bool:
    """A valid sale whose total differs from the sum of its lines (kept, but counted)."""
    lines = sum((decimal_of(item["amount"]) for item in sale["items"]), Decimal(0))
    return decimal_of(sale["total_amount"]) != lines


def split_sale(sale: dict[str, Any], stamp: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A valid sale → one sales_customer header and one sales_product record per line.

    `stamp` holds `_ingestion_ts` and `_batch_id`; `line_no` is the 1-based position in items.
    Fields the contract does not name are kept, as bronze keeps what the source sent.
    """
    header = {key: value for key, value in sale.items() if key != "items"}
    header.update(stamp)
    lines = [{"sale_id": sale["id"], "line_no": line_no, **item, **stamp}
             for line_no, item in enumerate(sale["items"], start=1)]
    return header, lines
