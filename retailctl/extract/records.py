"""Pure functions over source records: validate against the contract, split a sale.

A validator returns the reason a record is rejected, or None when it is valid: valid means the
contract's fields are there and Silver stores each exactly (`retailctl.values`). Numbers come
from orjson as int or float; a float is read through its shortest repr, which is exact for
money up to 15 significant digits, so no arithmetic here ever runs on binary floats.

Fields retailctl computes win over source fields of the same name: a source's own `line_no`
or `sale_id` on a sale line, or `_ingestion_ts` / `_batch_id` on any record, is kept beside
them as `_source_line_no`, `_source_sale_id`, `_source_ingestion_ts`, `_source_batch_id`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from retailctl import values
from retailctl.values import decimal_of

__all__ = ["ENTITIES", "decimal_of", "split_sale"]

ENTITIES = ("customers", "products", "sales")  # what extract reads, in this order
CUSTOMER_KEY = "customer_id"
PRODUCT_KEY = "product_sku"
STAMP_FIELDS = ("_ingestion_ts", "_batch_id")  # written on every bronze record
LINE_FIELDS = ("sale_id", "line_no", *STAMP_FIELDS)  # computed for every sale line


def source_name(field: str) -> str:
    """Where a source field that collides with a computed one is kept."""
    return f"_source_{field.lstrip('_')}"


def keep_aside(record: dict[str, Any], computed: tuple[str, ...]) -> dict[str, Any]:
    """The record with each field named like a computed one renamed by `source_name`."""
    if not any(field in record for field in computed):
        return record
    return {source_name(key) if key in computed else key: value for key, value in record.items()}


def _collision(record: dict[str, Any], computed: tuple[str, ...]) -> str | None:
    for field in computed:
        if field in record and source_name(field) in record:
            return (
                f"has both {field!r} (computed by retailctl) and {source_name(field)!r}, "
                "where it would be kept"
            )
    return None


def _field(record: dict[str, Any], name: str, problem: str | None) -> str | None:
    if name not in record:
        return f"{name} missing"
    return f"{name} {problem}" if problem else None


def customer_reject_reason(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    return (
        _field(record, CUSTOMER_KEY, values.key_problem(record.get(CUSTOMER_KEY)))
        or _field(record, "emails", values.text_list_problem(record.get("emails")))
        or _field(record, "phone_numbers", values.text_list_problem(record.get("phone_numbers")))
        or _collision(record, STAMP_FIELDS)
    )


def product_reject_reason(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    reason = _field(record, PRODUCT_KEY, values.key_problem(record.get(PRODUCT_KEY))) or _field(
        record, "unit_amount", values.money_problem(record.get("unit_amount"))
    )
    if reason:
        return reason
    for name in ("description", "supplier"):
        if record.get(name) is not None and (problem := values.text_problem(record[name])):
            return f"{name} {problem}"
    return _collision(record, STAMP_FIELDS)


def sale_reject_reason(sale: Any) -> str | None:
    """Why a sale (header and every line: a sale is one unit) is rejected, or None."""
    if not isinstance(sale, dict):
        return "not a JSON object"
    sale_id = sale.get("id")
    if not values.is_integer(sale_id) or sale_id < 1:
        return "id missing or not a positive integer"
    if sale_id > values.MAX_SALE_ID:
        return f"id above {values.MAX_SALE_ID}, the largest a bigint cursor can pass"
    reason = (
        _field(sale, "datetime", values.datetime_problem(sale.get("datetime")))
        or _field(sale, "total_amount", values.money_problem(sale.get("total_amount")))
        or _field(sale, CUSTOMER_KEY, values.key_problem(sale.get(CUSTOMER_KEY)))
        or _collision(sale, STAMP_FIELDS)
    )
    if reason:
        return reason
    items = sale.get("items")
    if not isinstance(items, list) or not items:
        return "items missing or empty: a sale has at least one line"
    if len(items) > values.INT4_MAX:
        return "more lines than line_no can number"
    for line_no, item in enumerate(items, start=1):
        reason = _line_reject_reason(item)
        if reason:
            return f"line {line_no}: {reason}"
    return None


def _line_reject_reason(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "not a JSON object"
    quantity = item.get("quantity")
    if not values.is_integer(quantity) or quantity < 1:
        return "quantity missing or not an integer of at least 1"
    return (
        _field(item, PRODUCT_KEY, values.key_problem(item.get(PRODUCT_KEY)))
        or _field(item, "quantity", values.integer_problem(quantity, 1, values.INT4_MAX))
        or _field(item, "amount", values.money_problem(item.get("amount")))
        or _collision(item, LINE_FIELDS)
    )


def sale_id_of(sale: Any) -> int | None:
    """The sale's id when it is a valid one (a positive integer a bigint cursor can pass)."""
    if isinstance(sale, dict):
        sale_id = sale.get("id")
        if values.is_integer(sale_id) and 1 <= sale_id <= values.MAX_SALE_ID:
            return sale_id
    return None


def is_inconsistent(sale: dict[str, Any]) -> bool:
    """A valid sale whose total differs from the sum of its lines (kept, but counted)."""
    lines = sum((decimal_of(item["amount"]) for item in sale["items"]), Decimal(0))
    return decimal_of(sale["total_amount"]) != lines


def split_sale(sale: dict[str, Any], stamp: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A valid sale → one sales_customer header and one sales_product record per line.

    `stamp` holds `_ingestion_ts` and `_batch_id`; `line_no` is the 1-based position in items.
    Fields the contract does not name are kept, as bronze keeps what the source sent; a source
    field named like a computed one is kept aside (`keep_aside`), never over it.
    """
    header = keep_aside({key: value for key, value in sale.items() if key != "items"}, STAMP_FIELDS)
    header.update(stamp)
    lines = [
        {"sale_id": sale["id"], "line_no": line_no, **keep_aside(item, LINE_FIELDS), **stamp}
        for line_no, item in enumerate(sale["items"], start=1)
    ]
    return header, lines
