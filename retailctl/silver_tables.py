"""The Silver tables as data: key, columns, staging types; their SQL composed from that.

Identifiers are composed with psycopg.sql; values only ever travel as parameters or COPY data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

STAGE_EXTRA = (("_ingestion_ts", "timestamptz"), ("_batch_id", "uuid"), ("_line", "bigint"))

UPSERT = """
with upserted as (
    insert into {target} as t ({columns}, _ingestion_ts, _batch_id, _loaded_at)
    select {columns}, _ingestion_ts, _batch_id, now() from {source}
    on conflict ({key}) do update
    set {assignments}, _ingestion_ts = excluded._ingestion_ts, _batch_id = excluded._batch_id,
        _loaded_at = excluded._loaded_at
    where ({current}) is distinct from ({incoming})
      and excluded._ingestion_ts >= t._ingestion_ts
    returning (xmax = 0) as inserted
)
select count(*) filter (where inserted), count(*) filter (where not inserted) from upserted
"""


def exact(value: Any) -> Any:
    """A JSON number as exact text for a numeric column: a float's shortest repr, never float math."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"not a number: {value!r}")
    return value


def integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"not an integer: {value!r}")
    return value


def text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def text_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"not a list of strings: {value!r}")
    return value


CONVERTERS = {"text": text, "text[]": text_list, "numeric": exact, "bigint": integer,
              "int": integer, "timestamptz": text}


@dataclass(frozen=True)
class SilverTable:
    name: str
    entity: str  # the bronze directory
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, type), key columns first
    nullable: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        assert tuple(name for name, _ in self.columns[:len(self.key)]) == self.key

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def stage(self) -> sql.Identifier:
        return sql.Identifier(f"stage_{self.name}")

    def stage_row(self, record: dict[str, Any], line_no: int) -> tuple[Any, ...]:
        values = tuple(CONVERTERS[kind](record[name]) for name, kind in self.columns)
        return (*values, record["_ingestion_ts"], record["_batch_id"], line_no)

    @property
    def create_stage_sql(self) -> sql.Composed:
        columns = [sql.SQL("{} {}{}").format(
            sql.Identifier(name), sql.SQL(kind),
            sql.SQL("" if name in self.nullable else " not null"))
            for name, kind in (*self.columns, *STAGE_EXTRA)]
        return sql.SQL("create temp table {} ({}) on commit drop").format(
            self.stage, sql.SQL(", ").join(columns))

    @property
    def copy_sql(self) -> sql.Composed:
        names = [*self.column_names, *(name for name, _ in STAGE_EXTRA)]
        return sql.SQL("copy {} ({}) from stdin").format(
            self.stage, sql.SQL(", ").join(map(sql.Identifier, names)))

    def _upsert(self, source: sql.Composable) -> sql.Composed:
        non_key = [name for name in self.column_names if name not in self.key]
        return sql.SQL(UPSERT).format(
            target=sql.Identifier("silver", self.name),
            columns=sql.SQL(", ").join(map(sql.Identifier, self.column_names)),
            source=source,
            key=sql.SQL(", ").join(map(sql.Identifier, self.key)),
            assignments=sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name)) for name in non_key),
            current=sql.SQL(", ").join(sql.Identifier("t", name) for name in non_key),
            incoming=sql.SQL(", ").join(sql.Identifier("excluded", name) for name in non_key),
        )

    @property
    def upsert_sql(self) -> sql.Composed:
        return self._upsert(self.stage)

    @property
    def upsert_dedup_sql(self) -> sql.Composed:
        """The same, keeping only the last line of each key (a re-extracted chunk in one file)."""
        key = sql.SQL(", ").join(map(sql.Identifier, self.key))
        latest = sql.SQL("(select distinct on ({key}) * from {stage} order by {key}, _line desc) s")
        return self._upsert(latest.format(key=key, stage=self.stage))


TABLES: tuple[SilverTable, ...] = (
    SilverTable("customers", "customers", ("customer_id",),
                (("customer_id", "text"), ("emails", "text[]"), ("phone_numbers", "text[]"))),
    SilverTable("products", "products", ("product_sku",),
                (("product_sku", "text"), ("description", "text"), ("unit_amount", "numeric"),
                 ("supplier", "text")), nullable=frozenset({"description", "supplier"})),
    SilverTable("sales_customer", "sales_customer", ("id",),
                (("id", "bigint"), ("datetime", "timestamptz"), ("total_amount", "numeric"),
                 ("customer_id", "text"))),
    SilverTable("sales_product", "sales_product", ("sale_id", "line_no"),
                (("sale_id", "bigint"), ("line_no", "int"), ("product_sku", "text"),
                 ("quantity", "int"), ("amount", "numeric"))),
)
TABLES_BY_NAME = {table.name: table for table in TABLES}
