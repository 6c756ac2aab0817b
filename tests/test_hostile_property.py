"""Property: whatever sales a source serves (arbitrary unicode, extreme numbers, odd date-times,
extra and colliding fields, missing ones), after extract and load every sale is either in
silver exactly (values equal) or in `_rejected`, never both, never neither; and what extract
accepts, load stores without quarantining a line."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from retailctl.values import decimal_of
from tests.helpers import bronze_rows, extract, fresh_database, load, settings_for
from tests.helpers.scripted_api import Reply, Request, ScriptedApi

STAMP = ("_ingestion_ts", "_batch_id", "_reject_reason")
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # any unicode, NUL too
KEYS = st.one_of(TEXT, st.sampled_from(["", "   ", "C" * 255, "C" * 256, "ü" * 300, "a\x00b"]))
NUMBERS = st.one_of(
    st.integers(min_value=-3, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            0,
            0.0,
            -0.0,
            0.1,
            19.99,
            0.30000000000000004,
            1e308,
            5e-324,
            10**15,
            10**15 - 1,
            999999999999999.9,
            123456789012.34567,
        ]
    ),
)
QUANTITIES = st.one_of(
    st.integers(min_value=-2, max_value=2**40), st.sampled_from([2**31 - 1, 2**31, 1.0, True, "2"])
)
IDS = st.one_of(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from([2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
)
DATETIMES = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s, frac, tz: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{tz}",
        st.integers(1, 9999),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from(["", ".5", ".123456", ".1234567"]),
        st.sampled_from(["Z", "+00:00", "-05:00", "+05:30", "+15:59", "-15:59", "+16:00", "", "+0100"]),
    ),
    st.sampled_from(
        [
            "2024-W01-1T10:00:00+00:00",
            "2024-01-01 10:00:00+00:00",
            "2024-01-01t10:00:00z",
            "2024-02-30T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-12-31T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "yesterday",
            "",
        ]
    ),
    TEXT,
    NUMBERS,
)
# Values extract must accept: odd but storable, at the edges of each rule.
GOOD_KEYS = st.one_of(
    st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=255
    ).filter(str.strip),
    st.sampled_from(["C" * 255, "ü" * 255, "💶" * 255, "'; drop table x; --"]),
)
GOOD_MONEY = st.one_of(
    st.integers(0, 10**15 - 1),
    st.decimals(0, 10**13, places=2, allow_nan=False, allow_infinity=False).map(float),
    st.sampled_from([0, 0.0, -0.0, 5e-324, 1e-300, 999999999999999.0, 123456789.123456]),
)
GOOD_DATETIMES = st.builds(
    lambda moment, frac, tz: f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{frac}{tz}",
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(["", ".5", ".000001", ".123456"]),
    st.sampled_from(["Z", "+00:00", "-05:00", "+05:30", "+15:59", "-15:59"]),
)
EXTRA_SALE_FIELDS = st.dictionaries(
    st.sampled_from(
        ["note", "_ingestion_ts", "_batch_id", "_reject_reason", "_record", "line_no", "channel"]
    ),
    st.one_of(TEXT, NUMBERS, st.none()),
    max_size=2,
)
EXTRA_LINE_FIELDS = st.dictionaries(
    st.sampled_from(["line_no", "sale_id", "_source_line_no", "_source_sale_id", "_batch_id", "discount"]),
    st.one_of(TEXT, st.integers(0, 9)),
    max_size=2,
)


@st.composite
def sale_lines(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([None, [], "lines", [1, 2]]))
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        line = {"product_sku": draw(KEYS), "quantity": draw(QUANTITIES), "amount": draw(NUMBERS)}
        for name in draw(st.sets(st.sampled_from(list(line)), max_size=1)):
            del line[name]  # sometimes one missing
        lines.append(line | draw(EXTRA_LINE_FIELDS))
    return lines


@st.composite
def good_sale(draw: st.DrawFn, sale_id: int) -> dict[str, Any]:
    items = [
        {
            "product_sku": draw(GOOD_KEYS),
            "quantity": draw(st.integers(1, 2**31 - 1)),
            "amount": draw(GOOD_MONEY),
        }
        | draw(
            EXTRA_LINE_FIELDS.filter(
                lambda extra: (
                    not {"line_no", "_source_line_no"} <= extra.keys()
                    and not {"sale_id", "_source_sale_id"} <= extra.keys()
                )
            )
        )
        for _ in range(draw(st.integers(1, 4)))
    ]
    return {
        "id": sale_id,
        "datetime": draw(GOOD_DATETIMES),
        "total_amount": draw(GOOD_MONEY),
        "customer_id": draw(GOOD_KEYS),
        "items": items,
        "note": draw(TEXT),
    }


@st.composite
def wild_sale(draw: st.DrawFn, sale_id: int) -> dict[str, Any]:
    sale = {
        "id": sale_id,
        "datetime": draw(DATETIMES),
        "total_amount": draw(NUMBERS),
        "customer_id": draw(KEYS),
        "items": draw(sale_lines()),
    }
    for name in draw(st.sets(st.sampled_from(["datetime", "total_amount", "customer_id"]), max_size=1)):
        del sale[name]
    return sale | draw(EXTRA_SALE_FIELDS)


@st.composite
def sales(draw: st.DrawFn) -> list[Any]:
    ids = draw(st.lists(IDS, min_size=1, max_size=30, unique=True))
    served: list[Any] = [draw(st.one_of(good_sale(sale_id), wild_sale(sale_id))) for sale_id in ids]
    bad_ids = st.sampled_from([0, -1, "7", 3.5, None, True, [1]])
    served += [
        {
            "id": draw(bad_ids),
            "datetime": "2026-01-01T00:00:00Z",
            "total_amount": 1,
            "customer_id": "C1",
            "items": [{"product_sku": "S", "quantity": 1, "amount": 1}],
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    served += draw(st.lists(st.one_of(TEXT, NUMBERS, st.none()), max_size=1))  # not objects
    return draw(st.permutations(served))


@pytest.fixture(scope="module")
def source() -> Iterator[tuple[ScriptedApi, list[Any]]]:
    """One scripted server for every example: it serves whatever `current[0]` holds."""
    current: list[Any] = [[]]

    def serve(request: Request) -> Reply | None:
        if request.path == "/sales":
            if request.params.get("start_sales_id", 1) > 1:
                return Reply(body=b'{"items": [], "total_items": 0}')
            body = json.dumps({"items": current[0], "total_items": len(current[0])}, allow_nan=False)
            return Reply(body=body.encode())
        return None

    with ScriptedApi(serve) as api:
        yield api, current


def silver_sales(db_url: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        headers = conn.execute(
            "select id, datetime, total_amount, customer_id from silver.sales_customer"
        ).fetchall()
        lines = conn.execute(
            "select sale_id, line_no, product_sku, quantity, amount "
            "from silver.sales_product order by sale_id, line_no"
        ).fetchall()
    found: dict[int, tuple[Any, ...]] = {row[0]: (*row[1:], []) for row in headers}
    for sale_id, line_no, sku, quantity, amount in lines:
        found[sale_id][3].append((line_no, sku, quantity, amount))
    return found


def expected_silver(sale: dict[str, Any]) -> tuple[Any, ...]:
    """What silver must hold, exactly, for a sale extract accepted."""
    return (
        datetime.fromisoformat(sale["datetime"]),
        decimal_of(sale["total_amount"]),
        sale["customer_id"],
        [
            (n, item["product_sku"], item["quantity"], decimal_of(item["amount"]))
            for n, item in enumerate(sale["items"], start=1)
        ],
    )


def without_stamp(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in STAMP}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(served=sales())
def test_every_sale_is_in_silver_exactly_or_rejected_never_both_never_neither(
    served: list[Any], source: tuple[ScriptedApi, list[Any]], pg_admin_url: str
) -> None:
    api, current = source
    current[0] = served
    seen = orjson.loads(json.dumps(served))  # the sales as the pipeline parses them
    with fresh_database(pg_admin_url) as db_url, tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        [result] = extract(
            settings_for(data_dir, db_url, api.url, RETAIL_PAGE_SIZE="1000"), entities=["sales"]
        )
        loaded = load(data_dir, db_url)
        assert (loaded.errors, loaded.quarantined) == ([], [])  # valid at extract: loads as is
        silver = silver_sales(db_url)
        rejected = [without_stamp(row) for row in bronze_rows(data_dir, "sales", rejected=True)]
    event(
        f"sales loaded: {'some' if result.records else 'none'}; "
        f"rejected: {'some' if result.rejected else 'none'}"
    )
    assert result.records + result.rejected == len(served)
    assert len(silver) == result.records
    for sale, sent in zip(seen, served, strict=True):
        in_silver = isinstance(sale, dict) and type(sale.get("id")) is int and sale["id"] in silver
        if in_silver:  # equal to what the source sent, not only to what was parsed
            assert silver.pop(sale["id"]) == expected_silver(sent), sent
        matches = [row for row in rejected if row in (sale, {"_record": sale})]
        in_rejected = bool(matches)
        if in_rejected:
            rejected.remove(matches[0])
        assert in_silver != in_rejected, (sale, in_silver, in_rejected)
    assert silver == {} and rejected == []  # nothing in either that was not served
