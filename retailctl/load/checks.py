"""A bronze line checked against what its Silver table stores exactly (`retailctl.values`).

Extract writes only lines that pass; these checks are for a file that failed the fast path
(written by hand or by an older version): each line that fails is quarantined with the reason
returned here, and the others load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retailctl import values
from retailctl.load.files import BronzeFile

# Texts that are indexed (in silver and in gold) have a key's length limit.
INDEXED_TEXT = frozenset({"customer_id", "product_sku"})

_BY_TYPE: dict[str, Callable[[Any], str | None]] = {
    "text": values.text_problem,
    "text[]": values.text_list_problem,
    "numeric": values.money_problem,
    "bigint": lambda value: values.integer_problem(value, 1, values.INT8_MAX),
    "int": lambda value: values.integer_problem(value, 1, values.INT4_MAX),
    "timestamptz": values.datetime_problem,
}


def record_problem(file: BronzeFile, record: Any) -> str | None:
    """Why this parsed line of `file` cannot load exactly, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    table = file.table
    for name, kind in table.columns:
        if name not in record:
            return f"missing field {name!r}"
        value = record[name]
        if value is None and name in table.nullable:
            continue
        check = values.key_problem if name in INDEXED_TEXT else _BY_TYPE[kind]
        problem = check(value)
        if problem:
            return f"{name} {problem}"
    for name, expected in (("_ingestion_ts", file.name.ingestion_ts), ("_batch_id", file.name.batch_id)):
        if record.get(name) != expected:
            return f"{name} {record.get(name)!r} is not its file's ({expected}, from the file name)"
    return None
