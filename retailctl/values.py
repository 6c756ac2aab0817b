"""What a Silver column holds exactly: the value rules extract and load share.

Python accepts more than PostgreSQL stores (a NUL in a string, an int of any size, ISO week
dates), and a float holds a decimal exactly only up to 15 significant digits. Extract rejects a
source record that breaks one of these rules, with the reason; load checks a bronze line
against the same rules before it reaches Postgres, so that a line it cannot store exactly is
quarantined with its reason instead of failing its file. Each check returns the reason a value
is refused, or None.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

MAX_KEY_CHARS = 255  # customer_id, product_sku: keys of btree indexes (a row must fit ~2,700 bytes)
MAX_TEXT_CHARS = 10_000  # any other text: a description, a supplier, an email, a phone number
MAX_LIST_ITEMS = 1_000  # emails, phone_numbers
INT4_MAX = 2**31 - 1  # quantity, line_no
INT8_MAX = 2**63 - 1
MAX_SALE_ID = INT8_MAX - 1  # the cursor, the next id to read, is a bigint too
MONEY_DIGITS = 15  # a JSON number with more significant digits may have been rounded by a float
MONEY_LIMIT = 10**15
# RFC 3339 as PostgreSQL reads it exactly: microseconds at most, offsets up to ±15:59.
DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-](?:0\d|1[0-5]):[0-5]\d)")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # text holds no NUL; UTF-8 no lone surrogate


def text_problem(value: Any, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    if not isinstance(value, str):
        return "not a string"
    if len(value) > max_chars:
        return f"longer than {max_chars} characters"
    found = _UNSTORABLE.search(value)
    if found:
        character = found.group()
        return (
            "contains a NUL character"
            if character == "\x00"
            else f"contains a lone surrogate (U+{ord(character):04X})"
        )
    return None


def key_problem(value: Any) -> str | None:
    """A business key: a non-blank text of at most MAX_KEY_CHARS characters."""
    if isinstance(value, str) and not value.strip():
        return "empty"
    return text_problem(value, MAX_KEY_CHARS)


def text_list_problem(value: Any) -> str | None:
    if not isinstance(value, list):
        return "not a list of strings"
    if len(value) > MAX_LIST_ITEMS:
        return f"more than {MAX_LIST_ITEMS} entries"
    for position, item in enumerate(value, start=1):
        problem = text_problem(item)
        if problem:
            return f"entry {position} {problem}"
    return None


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer_problem(value: Any, low: int, high: int) -> str | None:
    if not is_integer(value):
        return "not an integer"
    if not low <= value <= high:
        return f"out of range ({low} to {high})"
    return None


def money_problem(value: Any) -> str | None:
    """A non-negative amount, below MONEY_LIMIT, that its JSON number states exactly."""
    if not (is_integer(value) or isinstance(value, float)) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return "not a number"
    if value < 0:
        return "negative"
    if value >= MONEY_LIMIT:
        return f"not below {MONEY_LIMIT:.0e}"
    if isinstance(value, float) and _significant_digits(value) > MONEY_DIGITS:
        return f"more than {MONEY_DIGITS} significant digits (cannot be read exactly)"
    return None


def _significant_digits(value: float) -> int:
    """The significant digits of a float's shortest repr; a repr without an exponent and of
    few characters has no more digits than characters, so money skips the Decimal (extract
    checks every amount: this was a tenth of its time)."""
    text = repr(value)
    if len(text) <= MONEY_DIGITS + 1 and "e" not in text:  # digits and one "." (or "-0.0")
        return len(text) - 1
    return len(Decimal(text).normalize().as_tuple().digits)


def datetime_problem(value: Any) -> str | None:
    """RFC 3339 with an offset, e.g. 2026-01-31T09:30:00+01:00, within years 1 to 9999 in UTC."""
    if not isinstance(value, str) or not DATETIME.fullmatch(value):
        return "not an RFC 3339 date-time with an offset (YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)"
    try:
        datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError):
        return "not a valid date-time (years 1 to 9999)"
    return None


def decimal_of(value: int | float) -> Decimal:
    """The exact decimal a JSON number stated (a float through its shortest repr)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
