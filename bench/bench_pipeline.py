"""The whole pipeline beside this machine's limits, in one run (issue: speed at scale).

    python bench/bench_pipeline.py [--sales 200000] [--sales 1000000 ...] [--runs 3]

Per size, against the bundled mock API in its own process and a scratch database
(RETAIL_BENCH_DATABASE_URL, default the local server):
  1. the source's limit: a bare httpx + orjson loop over every /sales page (page size 1000)
  2. `retailctl extract`: sales/s, lines/s, peak RSS
  3. the database's limit: a bare COPY of the same rows into empty keyed tables
  4. `retailctl load`: rows/s, peak RSS
  5. `retailctl transform` from empty, then an hourly increment: 1,000 new sales, `run-all`
  6. `run-all` with nothing new (an idle hour)
Prints one table per size and writes everything as JSON (--json-out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import bare_loop
from bench_load import bare_copy, render_copy_data
from common import API_KEY, median, mock_api, print_table, retailctl, run_timed, scratch_database

PAGE = "1000"
INCREMENT = 1_000


def measure(sales: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sales": sales}
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as db_url:
        env = {
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_DATA_DIR": data_dir,
            "RETAIL_PAGE_SIZE": PAGE,
            "RETAIL_TRIGGER": "bench",
        }
        with mock_api(sales) as url:
            env["RETAIL_API_URL"] = url
            out["source_limit_s"] = median([bare_loop(url)[0] for _ in range(runs)])
            timed = run_timed(retailctl("extract", "--json"), env)
            sales_result = next(e for e in json.loads(timed.stdout)["entities"] if e["entity"] == "sales")
            out["extract_s"], out["extract_rss_mb"] = sales_result["seconds"], timed.peak_rss_mb
            out["lines"] = sales_result["lines"]
        copy_data = render_copy_data(Path(data_dir) / "bronze")
        bare = [bare_copy(copy_data) for _ in range(runs)]
        out["copy_limit_s"], out["rows"] = median([b[0] for b in bare]), bare[0][1]
        del copy_data
        timed = run_timed(retailctl("load", "--json"), env)
        out["load_s"], out["load_rss_mb"] = json.loads(timed.stdout)["seconds"], timed.peak_rss_mb
        out["transform_s"] = run_timed(retailctl("transform"), env).seconds
        run_timed(retailctl("test"), env)
        with mock_api(sales + INCREMENT) as url:
            env["RETAIL_API_URL"] = url
            out["increment_s"] = run_timed(retailctl("run-all"), env).seconds
            out["idle_s"] = median([run_timed(retailctl("run-all"), env).seconds for _ in range(runs)])
    return out


def report(m: dict[str, Any]) -> None:
    sales, lines, rows = m["sales"], m["lines"], m["rows"]
    source = sales / m["source_limit_s"]
    extract = sales / m["extract_s"]
    copy_limit = rows / m["copy_limit_s"]
    load = rows / m["load_s"]
    end_to_end = sales / (m["extract_s"] + m["load_s"])
    m.update(
        source_limit_sales_s=source,
        extract_sales_s=extract,
        copy_limit_rows_s=copy_limit,
        load_rows_s=load,
        extract_load_sales_s=end_to_end,
    )
    print_table(
        f"retailctl pipeline, {sales:,} sales ({lines:,} lines, {rows:,} silver rows)",
        [
            ("1 source limit (bare httpx+orjson)", f"{source:,.0f} sales/s"),
            ("2 extract", f"{extract:,.0f} sales/s"),
            ("  extract", f"{lines / m['extract_s']:,.0f} lines/s"),
            ("  extract / source limit", f"{extract / source:.0%}"),
            ("  extract peak RSS", f"{m['extract_rss_mb']:.0f} MB"),
            ("3 COPY limit (bare, keyed tables)", f"{copy_limit:,.0f} rows/s"),
            ("4 load", f"{load:,.0f} rows/s"),
            ("  load / COPY limit", f"{load / copy_limit:.0%}"),
            ("  load peak RSS", f"{m['load_rss_mb']:.0f} MB"),
            ("  extract + load end to end", f"{end_to_end:,.0f} sales/s"),
            ("5 transform from empty", f"{m['transform_s']:.1f} s"),
            (f"  hourly run-all, +{INCREMENT:,} sales", f"{m['increment_s']:.1f} s"),
            ("6 idle run-all (nothing new)", f"{m['idle_s']:.2f} s"),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--runs", type=int, default=3, help="medians of this many, where cheap")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/pipeline.json"))
    args = parser.parse_args()
    results = []
    for sales in args.sales or [200_000]:
        started = time.perf_counter()
        result = measure(sales, args.runs)
        report(result)
        print(f"  (measured in {time.perf_counter() - started:.0f} s)")
        results.append(result)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
