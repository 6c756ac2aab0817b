"""`retailctl verify` at scale: wall time and peak RSS against the number of sales.

    python bench/bench_verify.py [--sales 1000000] [--sales 2000000 ...] [--runs 3]

Per size: the bundled mock API in its own process, a scratch database
(RETAIL_BENCH_DATABASE_URL, default the local server), then `extract` (page size 1000),
`load` and `transform` untimed; then `retailctl verify --json`, timed, with its own peak RSS
(the median of --runs), and its split: the bronze scan and the database's aggregates (which
run at the same time, on a second connection). Prints one table and writes the figures as
JSON (--json-out).
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
from common import API_KEY, median, mock_api, retailctl, run_timed, scratch_database


def measure(sales: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sales": sales}
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as db_url, mock_api(sales) as url:
        env = {
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_API_URL": url,
            "RETAIL_DATA_DIR": data_dir,
            "RETAIL_PAGE_SIZE": "1000",
            "RETAIL_TRIGGER": "bench",
        }
        extracted = json.loads(run_timed(retailctl("extract", "--json"), env).stdout)
        out["lines"] = next(e["lines"] for e in extracted["entities"] if e["entity"] == "sales")
        run_timed(retailctl("load"), env)
        run_timed(retailctl("transform"), env)
        timings = []
        for _ in range(runs):
            timed = run_timed(retailctl("verify", "--json"), env)
            document = json.loads(timed.stdout)
            assert document["ok"], document["summary"]
            timings.append(
                (
                    timed.seconds,
                    timed.peak_rss_mb,
                    document["seconds"]["bronze"],
                    document["seconds"]["database"],
                )
            )
        out["days"] = document["days"]
        for index, name in enumerate(("seconds", "peak_rss_mb", "bronze_s", "database_s")):
            out[name] = median([t[index] for t in timings])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--runs", type=int, default=3, help="verify runs per size (median)")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/verify.json"))
    args = parser.parse_args()
    results = []
    for sales in args.sales or [1_000_000]:
        started = time.perf_counter()
        results.append(measure(sales, args.runs))
        print(f"  ({sales:,} sales measured in {time.perf_counter() - started:.0f} s)", flush=True)
    print("retailctl verify (median of runs; bronze scan and database aggregates run at once)")
    print(
        f"{'sales':>12} {'lines':>12} {'days':>6} {'seconds':>8} {'bronze s':>9} "
        f"{'database s':>11} {'peak RSS':>9}"
    )
    for r in results:
        print(
            f"{r['sales']:>12,} {r['lines']:>12,} {r['days']:>6} {r['seconds']:>8.1f} "
            f"{r['bronze_s']:>9.1f} {r['database_s']:>11.1f} {r['peak_rss_mb']:>6.0f} MB"
        )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
