"""The pure rules over source records: each reject reason, splitting a sale, exact money."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from retailctl.extract.records import (
    customer_reject_reason,
    decimal_of,
    is_inconsistent,
    product_reject_reason,
    sale_id_of,
    sale_reject_reason,
    split_sale,
)
from retailctl.values import money_problem

CUSTOMER = {"customer_id": "C000001", "emails": ["a@example.com"], "phone_numbers": ["+1 555 0100"]}
PRODUCT = {"product_sku": "SKU-00001", "description": "Mug", "unit_amount": 19.99, "supplier": "Acme"}
LINE = {"product_sku": "SKU-00001", "quantity": 2, "amount": 39.98}
SALE = {
    "id": 7,
    "datetime": "2026-03-01T10:15:00+05:30",
    "total_amount": 39.98,
    "customer_id": "C000001",
    "items": [LINE],
}
STAMP = {"_ingestion_ts": "2026-03-01T05:00:00+00:00", "_batch_id": "0f0e0d0c-0000-4000-8000-000000000001"}


MISSING = object()


def changed(record: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """`record` with `fields` replaced; a field given as MISSING is removed."""
    result = {**record, **fields}
    return {key: value for key, value in result.items() if value is not MISSING}


# -- customers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        CUSTOMER,
        changed(CUSTOMER, emails=[], phone_numbers=[]),
        changed(CUSTOMER, loyalty_tier="gold"),  # a field the contract does not name is kept
    ],
)
def test_a_valid_customer_is_accepted(record: dict[str, Any]) -> None:
    assert customer_reject_reason(record) is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (["C000001"], "not a JSON object"),
        (None, "not a JSON object"),
        (changed(CUSTOMER, customer_id=MISSING), "customer_id missing"),
        (changed(CUSTOMER, customer_id=""), "customer_id empty"),
        (changed(CUSTOMER, customer_id="   "), "customer_id empty"),
        (changed(CUSTOMER, customer_id=1), "customer_id not a string"),
        (changed(CUSTOMER, customer_id=["C1"]), "customer_id not a string"),
        (changed(CUSTOMER, emails=MISSING), "emails missing"),
        (changed(CUSTOMER, emails="a@example.com"), "emails not a list of strings"),
        (changed(CUSTOMER, emails=["a@example.com", None]), "emails entry 2 not a string"),
        (changed(CUSTOMER, phone_numbers=MISSING), "phone_numbers missing"),
        (changed(CUSTOMER, phone_numbers=[5550100]), "phone_numbers entry 1 not a string"),
    ],
)
def test_an_invalid_customer_is_rejected_with_its_reason(record: Any, reason: str) -> None:
    assert customer_reject_reason(record) == reason


# -- products ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        PRODUCT,
        changed(PRODUCT, unit_amount=0),
        changed(PRODUCT, unit_amount=12),
        changed(PRODUCT, description=None, supplier=None),
        changed(PRODUCT, description=MISSING, supplier=MISSING),
    ],
)
def test_a_valid_product_is_accepted(record: dict[str, Any]) -> None:
    assert product_reject_reason(record) is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("SKU-00001", "not a JSON object"),
        (changed(PRODUCT, product_sku=MISSING), "product_sku missing"),
        (changed(PRODUCT, product_sku=""), "product_sku empty"),
        (changed(PRODUCT, product_sku=42), "product_sku not a string"),
        (changed(PRODUCT, unit_amount=MISSING), "unit_amount missing"),
        (changed(PRODUCT, unit_amount="19.99"), "unit_amount not a number"),
        (changed(PRODUCT, unit_amount=True), "unit_amount not a number"),
        (changed(PRODUCT, unit_amount=float("nan")), "unit_amount not a number"),
        (changed(PRODUCT, unit_amount=float("inf")), "unit_amount not a number"),
        (changed(PRODUCT, unit_amount=-0.01), "unit_amount negative"),
        (changed(PRODUCT, description=5), "description not a string"),
        (changed(PRODUCT, supplier=["Acme"]), "supplier not a string"),
    ],
)
def test_an_invalid_product_is_rejected_with_its_reason(record: Any, reason: str) -> None:
    assert product_reject_reason(record) == reason


# -- sales and their lines -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sale",
    [
        SALE,
        changed(SALE, datetime="2026-03-01T04:45:00Z"),
        changed(SALE, datetime="2026-03-01T04:45:00.123456-07:00"),
        changed(SALE, total_amount=0, items=[changed(LINE, amount=0)]),
        changed(SALE, total_amount=1_000),  # inconsistent with its lines: kept, only counted
        changed(SALE, items=[LINE, changed(LINE, quantity=1, amount=19.99, promo="X")]),
    ],
)
def test_a_valid_sale_is_accepted(sale: dict[str, Any]) -> None:
    assert sale_reject_reason(sale) is None


@pytest.mark.parametrize(
    ("sale", "reason"),
    [
        ([SALE], "not a JSON object"),
        (changed(SALE, id=MISSING), "id missing or not a positive integer"),
        (changed(SALE, id=0), "id missing or not a positive integer"),
        (changed(SALE, id=-3), "id missing or not a positive integer"),
        (changed(SALE, id="7"), "id missing or not a positive integer"),
        (changed(SALE, id=7.0), "id missing or not a positive integer"),
        (changed(SALE, id=True), "id missing or not a positive integer"),
        (changed(SALE, datetime=MISSING), "datetime missing"),
        (
            changed(SALE, datetime="2026-03-01T10:15:00"),
            "datetime not an RFC 3339 date-time with an offset (YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)",
        ),
        (
            changed(SALE, datetime="yesterday"),
            "datetime not an RFC 3339 date-time with an offset (YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)",
        ),
        (
            changed(SALE, datetime=1_772_345_700),
            "datetime not an RFC 3339 date-time with an offset (YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)",
        ),
        (changed(SALE, total_amount=MISSING), "total_amount missing"),
        (changed(SALE, total_amount="39.98"), "total_amount not a number"),
        (changed(SALE, total_amount=-39.98), "total_amount negative"),
        (changed(SALE, total_amount=float("nan")), "total_amount not a number"),
        (changed(SALE, total_amount=False), "total_amount not a number"),
        (changed(SALE, customer_id=MISSING), "customer_id missing"),
        (changed(SALE, customer_id=" "), "customer_id empty"),
        (changed(SALE, items=MISSING), "items missing or empty: a sale has at least one line"),
        (changed(SALE, items=[]), "items missing or empty: a sale has at least one line"),
        (changed(SALE, items=LINE), "items missing or empty: a sale has at least one line"),
    ],
)
def test_an_invalid_sale_is_rejected_with_its_reason(sale: Any, reason: str) -> None:
    assert sale_reject_reason(sale) == reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("SKU-00001", "not a JSON object"),
        (changed(LINE, product_sku=MISSING), "product_sku missing"),
        (changed(LINE, product_sku=""), "product_sku empty"),
        (changed(LINE, quantity=MISSING), "quantity missing or not an integer of at least 1"),
        (changed(LINE, quantity=0), "quantity missing or not an integer of at least 1"),
        (changed(LINE, quantity=1.5), "quantity missing or not an integer of at least 1"),
        (changed(LINE, quantity="2"), "quantity missing or not an integer of at least 1"),
        (changed(LINE, quantity=True), "quantity missing or not an integer of at least 1"),
        (changed(LINE, amount=MISSING), "amount missing"),
        (changed(LINE, amount="39.98"), "amount not a number"),
        (changed(LINE, amount=-1), "amount negative"),
        (changed(LINE, amount=float("inf")), "amount not a number"),
    ],
)
def test_an_invalid_line_rejects_the_whole_sale_naming_the_line(line: Any, reason: str) -> None:
    assert sale_reject_reason(changed(SALE, items=[line])) == f"line 1: {reason}"
    assert sale_reject_reason(changed(SALE, items=[LINE, LINE, line])) == f"line 3: {reason}"


def test_the_first_invalid_field_is_the_reason_given() -> None:
    sale = changed(SALE, id=0, datetime="never", items=[])
    assert sale_reject_reason(sale) == "id missing or not a positive integer"
    line = changed(LINE, product_sku="", quantity=0, amount=-1)
    assert (
        sale_reject_reason(changed(SALE, items=[line, "x"]))
        == "line 1: quantity missing or not an integer of at least 1"
    )


# -- splitting a sale ----------------------------------------------------------------------


def test_split_sale_gives_one_header_and_a_line_per_item_numbered_from_one() -> None:
    sale = changed(
        SALE,
        channel="web",
        items=[LINE, {"product_sku": "SKU-00002", "quantity": 1, "amount": 5.5, "promo": "X"}],
    )
    header, lines = split_sale(sale, STAMP)
    assert header == {
        "id": 7,
        "datetime": "2026-03-01T10:15:00+05:30",
        "total_amount": 39.98,
        "customer_id": "C000001",
        "channel": "web",
        **STAMP,
    }
    assert lines == [
        {"sale_id": 7, "line_no": 1, "product_sku": "SKU-00001", "quantity": 2, "amount": 39.98, **STAMP},
        {
            "sale_id": 7,
            "line_no": 2,
            "product_sku": "SKU-00002",
            "quantity": 1,
            "amount": 5.5,
            "promo": "X",
            **STAMP,
        },
    ]
    assert "items" in sale and sale["items"][0] == LINE  # the source record is left as it was


# -- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "exact"),
    [
        (0.1, Decimal("0.1")),
        (19.99, Decimal("19.99")),
        (0.3, Decimal("0.3")),
        (1234567.89, Decimal("1234567.89")),
        (100.0, Decimal("100.0")),
        (1e-07, Decimal("0.0000001")),
        (5, Decimal(5)),
        (0, Decimal(0)),
        (10**20 + 1, Decimal("100000000000000000001")),
    ],
)
def test_decimal_of_reads_a_float_through_its_shortest_repr(value: int | float, exact: Decimal) -> None:
    assert decimal_of(value) == exact
    assert str(decimal_of(value)) == str(exact)  # not 0.1000000000000000055511151231257827...


@pytest.mark.parametrize(
    ("total", "amounts", "inconsistent"),
    [
        (0.3, [0.1, 0.2], False),  # 0.1 + 0.2 != 0.3 in binary floats; equal in money
        (59.97, [19.99, 19.99, 19.99], False),
        (39.98, [39.98], False),
        (10, [2.5, 7.5], False),
        (39.99, [39.98], True),
        (0.3, [0.1, 0.1], True),
        (0, [0.01], True),
    ],
)
def test_is_inconsistent_compares_the_total_with_the_lines_to_the_cent(
    total: float, amounts: list[float], inconsistent: bool
) -> None:
    sale = changed(SALE, total_amount=total, items=[changed(LINE, amount=a) for a in amounts])
    assert is_inconsistent(sale) is inconsistent


@pytest.mark.parametrize(
    ("sale", "sale_id"),
    [
        (SALE, 7),
        (changed(SALE, id=0), None),  # not a valid id: rejected by sale_reject_reason
        (changed(SALE, id=-3), None),
        (changed(SALE, id=MISSING), None),
        (changed(SALE, id="7"), None),
        (changed(SALE, id=7.0), None),
        (changed(SALE, id=True), None),
        ([7], None),
        (None, None),
    ],
)
def test_sale_id_of_is_the_integer_id_or_none(sale: Any, sale_id: int | None) -> None:
    assert sale_id_of(sale) == sale_id


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (19.99, None),
        (0.0, None),
        (-0.0, None),  # repr "-0.0": not negative, one digit
        (123456789012.345, None),  # 15 digits, 16 characters: the last that skips the Decimal
        (12345678901.2345, None),
        (1234567890123.45, None),
        (100000000000000.0, None),  # 16 characters but one significant digit
        (999999999999999.0, None),  # 15 nines
        (1e-07, None),  # an exponent: counted through the Decimal
        (1.2345678901234e-05, None),
        (1234567890.123456789, "more than 15 significant digits (cannot be read exactly)"),
        (1.2345678901234567e-05, "more than 15 significant digits (cannot be read exactly)"),
        (0.1234567890123456, "more than 15 significant digits (cannot be read exactly)"),
        (99999999999999.99, "more than 15 significant digits (cannot be read exactly)"),
        (1e15, "not below 1e+15"),
        (-0.01, "negative"),
        (float("nan"), "not a number"),
        (True, "not a number"),
    ],
)
def test_money_problem_counts_the_significant_digits_of_the_shortest_repr(
    value: Any, reason: str | None
) -> None:
    assert money_problem(value) == reason
