"""The peer: dlt's rest_api source reading the retail API into Postgres, as a dlt user writes it.

Run by bench_dlt.py with dlt's own interpreter (a private venv: dlt is not a retailctl
dependency):

    /work/venv-dlt/bin/python bench/dlt_retail_pipeline.py

Settings come from the environment: BENCH_API_URL, BENCH_API_KEY, BENCH_DATABASE_URL,
BENCH_PAGE_SIZE, BENCH_PIPELINES_DIR, and the variant: BENCH_WRITE_DISPOSITION (append | merge)
and BENCH_LOADER_FILE_FORMAT (insert_values, dlt's default for Postgres | csv, COPY).
Prints one JSON line: the rows dlt loaded per table.

/products and /customers page by offset; /sales pages by `start_sales_id` = the last id + 1 and
ends on a short page (the source's contract), which no built-in paginator expresses, so it is a
small BasePaginator: the way dlt's docs say to page an API of one's own.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dlt
from dlt.sources.helpers.rest_client.paginators import BasePaginator, OffsetPaginator
from dlt.sources.rest_api import rest_api_source


class NextSaleIdPaginator(BasePaginator):
    """`start_sales_id` = the last sale's id + 1; a page shorter than the limit is the last."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.next_id = 1

    def init_request(self, request: Any) -> None:
        request.params = {**(request.params or {}), "start_sales_id": self.next_id, "limit": self.limit}

    def update_state(self, response: Any, data: list[Any] | None = None) -> None:
        if not data or len(data) < self.limit:
            self._has_next_page = False
        else:
            self.next_id = int(data[-1]["id"]) + 1

    def update_request(self, request: Any) -> None:
        request.params["start_sales_id"] = self.next_id


def source(url: str, key: str, page: int, write_disposition: str) -> Any:
    def snapshot(name: str, key_column: str) -> dict[str, Any]:
        return {
            "name": name,
            "primary_key": key_column,
            "write_disposition": write_disposition,
            "endpoint": {
                "path": f"/{name}",
                "data_selector": "items",
                "paginator": OffsetPaginator(limit=page, total_path="total_items"),
            },
        }

    return rest_api_source(
        {
            "client": {"base_url": url, "headers": {"Authorization": key}},
            "resources": [
                snapshot("products", "product_sku"),
                snapshot("customers", "customer_id"),
                {
                    "name": "sales",
                    "primary_key": "id",
                    "write_disposition": write_disposition,
                    "endpoint": {
                        "path": "/sales",
                        "data_selector": "items",
                        "paginator": NextSaleIdPaginator(page),
                    },
                },
            ],
        }
    )


def main() -> None:
    env = os.environ
    pipeline = dlt.pipeline(
        pipeline_name="retail_bench",
        pipelines_dir=env["BENCH_PIPELINES_DIR"],
        destination=dlt.destinations.postgres(env["BENCH_DATABASE_URL"]),
        dataset_name="retail",
    )
    info = pipeline.run(
        source(
            env["BENCH_API_URL"],
            env["BENCH_API_KEY"],
            int(env["BENCH_PAGE_SIZE"]),
            env["BENCH_WRITE_DISPOSITION"],
        ),
        loader_file_format=env["BENCH_LOADER_FILE_FORMAT"],
    )
    info.raise_on_failed_jobs()
    # what is in the database, not what dlt says it normalized
    counts = {}
    with pipeline.sql_client() as client:
        for table in pipeline.default_schema.data_table_names():
            counts[table] = client.execute_sql(
                f"select count(*) from {client.make_qualified_table_name(table)}"
            )[0][0]
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
