"""A backfill from empty to tested Gold: `run-all` beside the same steps run one after another.

    python bench/bench_backfill.py [--sales 2000000 ...] [--latency-ms MS]

Per size, against the bundled mock API in its own process (page size 1000), in one run:
  1. the source's limit: a bare httpx + orjson loop over every /sales page
  2. the steps one after another, each its own process, into a scratch database: `retailctl
     extract`, `load`, `transform`, `test --changed` (every dbt test on every row, as run-all's
     first build runs them; no verify)
  3. `retailctl run-all` from empty into another: extract and load overlapped (load takes each
     chunk extract has made durable while the next is read), then one dbt build
  4. the SQL floor for Gold on run-all's database: the fact and the mart as hand-written
     `create table … as select` from silver, then their indexes (bench_scale.build_floor)
The issue's target: the backfill within 1.5x of (the source limit's time + the SQL floor).
`--latency-ms` delays every answer of the mock (as a source across a network would): the bundled
mock otherwise shares this machine's cores with retailctl, so extract is CPU-bound, not waiting.
Prints one table per size and writes everything as JSON (--json-out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import bare_loop
from bench_scale import build_floor
from common import API_KEY, mock_api, print_table, retailctl, run_timed, scratch_database

PAGE = "1000"
STEPS = (("extract", "extract"), ("load", "load"), ("transform", "transform"), ("test", "test", "--changed"))


def environment(db_url: str, data_dir: str, url: str) -> dict[str, str]:
    return {
        "RETAIL_API_KEY": API_KEY,
        "RETAIL_API_URL": url,
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_DATA_DIR": data_dir,
        "RETAIL_PAGE_SIZE": PAGE,
        "RETAIL_TRIGGER": "bench",
    }


def measure(sales: int, latency_ms: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sales": sales, "latency_ms": latency_ms}
    with mock_api(sales, ["--latency-ms", str(latency_ms)]) as url:
        out["source_limit_s"] = bare_loop(url)[0]
        print(f"  source limit: {out['source_limit_s']:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as data_dir, scratch_database() as db_url:
            env = environment(db_url, data_dir, url)
            for name, *args in STEPS:
                timed = run_timed(retailctl(*args), env)
                out[f"sequential_{name}_s"], out[f"sequential_{name}_rss_mb"] = (
                    timed.seconds,
                    timed.peak_rss_mb,
                )
                print(f"  {name}: {timed.seconds:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as data_dir, scratch_database() as db_url:
            timed = run_timed(retailctl("run-all", "--json"), environment(db_url, data_dir, url))
            out["run_all_s"], out["run_all_rss_mb"] = timed.seconds, timed.peak_rss_mb
            out.update({f"run_all_{s['step']}_s": s["seconds"] for s in json.loads(timed.stdout)["steps"]})
            print(f"  run-all: {timed.seconds:.1f} s", flush=True)
            out.update(build_floor(db_url))
    return out


def report(m: dict[str, Any]) -> None:
    sequential = sum(m[f"sequential_{name}_s"] for name, *_ in STEPS)
    floor = m["floor_fact_s"] + m["floor_mart_s"]
    floor_indexed = floor + m["floor_indexes_s"]
    target = m["source_limit_s"] + floor
    target_indexed = m["source_limit_s"] + floor_indexed
    extract_load = m["sequential_extract_s"] + m["sequential_load_s"]
    overlapped = m["run_all_extract_s"] + m["run_all_load_s"]
    m.update(sequential_s=sequential, floor_s=floor, floor_indexed_s=floor_indexed)
    table = [
        ("1 source limit", f"{m['source_limit_s']:.1f} s"),
        ("  SQL floor: CTAS fact + mart / + indexes", f"{floor:.1f} / {floor_indexed:.1f} s"),
        ("  source limit + SQL floor", f"{target:.1f} / {target_indexed:.1f} s"),
        ("2 steps one after another", f"{sequential:.1f} s"),
        *[(f"  {name}", f"{m[f'sequential_{name}_s']:.1f} s") for name, *_ in STEPS],
        ("3 run-all from empty", f"{m['run_all_s']:.1f} s"),
        ("  extract (load beside it)", f"{m['run_all_extract_s']:.1f} s"),
        ("  load left once extract ended", f"{m['run_all_load_s']:.1f} s"),
        ("  transform + test (one dbt build)", f"{m['run_all_transform_s'] + m['run_all_test_s']:.1f} s"),
        ("  run-all peak RSS", f"{m['run_all_rss_mb']:.0f} MB"),
        ("extract + load: one after another / overlapped", f"{extract_load:.1f} / {overlapped:.1f} s"),
        (
            "run-all / (source limit + floor)",
            f"{m['run_all_s'] / target:.2f}x / {m['run_all_s'] / target_indexed:.2f}x",
        ),
        (
            "steps one after another / (source + floor)",
            f"{sequential / target:.2f}x / {sequential / target_indexed:.2f}x",
        ),
    ]
    latency = f", the source answering after {m['latency_ms']} ms" if m["latency_ms"] else ""
    print_table(f"backfill from empty to tested Gold, {m['sales']:,} sales{latency}", table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--latency-ms", type=int, default=0, help="the mock's delay per request")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/backfill.json"))
    args = parser.parse_args()
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for sales in args.sales or [2_000_000]:
        started = time.perf_counter()
        print(f"{sales:,} sales (load average {os.getloadavg()[0]:.1f})", flush=True)
        result = measure(sales, args.latency_ms)
        result["measured_s"] = time.perf_counter() - started
        report(result)
        print(
            f"  (measured in {result['measured_s']:.0f} s, load average {os.getloadavg()[0]:.1f})", flush=True
        )
        results.append(result)
        args.json_out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
