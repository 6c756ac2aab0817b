"""Extraction throughput beside the source's own limit, and peak memory at two sizes.

    python bench/bench_extract.py [--sales 100000 --sales 1000000] [--runs 3]

Per size: the API's limit (a bare httpx + orjson loop over every /sales page at page size 1000),
then `retailctl extract --entity sales` of the same pages into a scratch database
(RETAIL_BENCH_DATABASE_URL, default the local server). Medians of --runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import API_KEY, median, mock_api, print_table, retailctl, run_timed, scratch_database

PAGE = 1000


def bare_loop(url: str) -> tuple[float, int, int]:
    """The source's limit: pull and parse every page, nothing else."""
    sales = lines = 0
    start = 1
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": API_KEY}) as client:
        while True:
            items = orjson.loads(
                client.get("/sales", params={"start_sales_id": start, "limit": PAGE}).content
            )["items"]
            sales += len(items)
            lines += sum(len(sale["items"]) for sale in items)
            if len(items) < PAGE:
                break
            start = items[-1]["id"] + 1
    return time.perf_counter() - started, sales, lines


def retailctl_extract(url: str) -> tuple[float, float, int, int]:
    with scratch_database() as db_url, tempfile.TemporaryDirectory() as data_dir:
        env = {
            "RETAIL_API_URL": url,
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_DATA_DIR": data_dir,
            "RETAIL_PAGE_SIZE": str(PAGE),
        }
        timed = run_timed(retailctl("extract", "--entity", "sales", "--json"), env)
        result = json.loads(timed.stdout)["entities"][0]
        return result["seconds"], timed.peak_rss_mb, result["records"], result["lines"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    report = []
    for size in args.sales or [100_000]:
        with mock_api(size) as url:
            bare = [bare_loop(url) for _ in range(args.runs)]
            ours = [retailctl_extract(url) for _ in range(args.runs)]
        bare_s = median([b[0] for b in bare])
        ours_s = median([o[0] for o in ours])
        sales, lines = ours[0][2], ours[0][3]
        assert sales == size == bare[0][1], (sales, size, bare[0][1])
        row = {
            "sales": size,
            "lines": lines,
            "source_limit_sales_s": size / bare_s,
            "extract_sales_s": size / ours_s,
            "extract_lines_s": lines / ours_s,
            "ratio": bare_s / ours_s,
            "peak_rss_mb": max(o[1] for o in ours),
        }
        report.append(row)
        print_table(
            f"extract, {size:,} sales ({lines:,} lines), page size {PAGE}, median of {args.runs}",
            [
                ("source limit (bare httpx+orjson)", f"{row['source_limit_sales_s']:,.0f} sales/s"),
                ("retailctl extract", f"{row['extract_sales_s']:,.0f} sales/s"),
                ("retailctl extract", f"{row['extract_lines_s']:,.0f} lines/s"),
                ("extract / source limit", f"{row['ratio']:.0%}"),
                ("peak RSS of extract", f"{row['peak_rss_mb']:.0f} MB"),
            ],
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
