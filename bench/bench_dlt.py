"""retailctl against its peer, dlt, reading the same source into the same database, in one run.

    python bench/bench_dlt.py [--sales 50000 --sales 200000] [--runs 3]
        [--dlt-python /work/venv-dlt/bin/python] [--variant append:insert_values ...]

dlt is not a retailctl dependency: install `dlt[postgres]` 1.x in a venv of its own
(`python3 -m venv /work/venv-dlt && /work/venv-dlt/bin/pip install 'dlt[postgres]>=1,<2'`).

Per size, against one bundled mock API process (`retailctl api serve`, page size 1000) and the
database server of RETAIL_BENCH_DATABASE_URL (a scratch database per run):
  1. the source's limit: a bare httpx + orjson loop over every /sales page
  2. retailctl: `retailctl extract` then `retailctl load`, two processes as cron runs them
     (start-up, migrations and the three entities included), from an empty database
  3. dlt: one process running bench/dlt_retail_pipeline.py (rest_api source → postgres, the same
     three entities; sales become dlt's `sales` + `sales__items` tables) from an empty database,
     per variant write_disposition:loader_file_format (dlt's default for Postgres is
     append:insert_values; csv loads with COPY; merge is the keyed upsert retailctl does)
Runs are interleaved (retailctl, each dlt variant, again) so drifting machine load hits both.
The ratio is dlt's median wall time over retailctl's, against dlt's fastest variant; the
ceiling is dlt's time over the source limit's: the ratio of a reader costing nothing but the
source's own time (no loading, no start-up), which no extract+load paced by this source passes.
Prints one table per size and writes JSON (--json-out).
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
from common import API_KEY, median, mock_api, print_table, retailctl, run_timed, scratch_database

PAGE = 1000
HERE = Path(__file__).resolve().parent
DEFAULT_VARIANTS = ["append:insert_values", "append:csv", "merge:insert_values"]


def run_retailctl(url: str) -> dict[str, Any]:
    """extract then load from empty, each a process; wall times include start-up."""
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as db_url:
        env = {
            "RETAIL_API_URL": url,
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_DATA_DIR": data_dir,
            "RETAIL_PAGE_SIZE": str(PAGE),
            "RETAIL_TRIGGER": "bench",
        }
        extract = run_timed(retailctl("extract", "--json"), env)
        load = run_timed(retailctl("load", "--json"), env)
        tables = json.loads(load.stdout)["tables"]
        return {
            "extract_s": extract.seconds,
            "load_s": load.seconds,
            "total_s": extract.seconds + load.seconds,
            "extract_rss_mb": extract.peak_rss_mb,
            "load_rss_mb": load.peak_rss_mb,
            "rows": {name: table["rows"] for name, table in tables.items()},
        }


def run_dlt(url: str, dlt_python: str, variant: str) -> dict[str, Any]:
    """dlt's pipeline from empty, one process; wall time includes start-up."""
    write_disposition, file_format = variant.split(":")
    with tempfile.TemporaryDirectory() as pipelines_dir, scratch_database() as db_url:
        env = {
            "BENCH_API_URL": url,
            "BENCH_API_KEY": API_KEY,
            "BENCH_DATABASE_URL": db_url,
            "BENCH_PAGE_SIZE": str(PAGE),
            "BENCH_PIPELINES_DIR": pipelines_dir,
            "BENCH_WRITE_DISPOSITION": write_disposition,
            "BENCH_LOADER_FILE_FORMAT": file_format,
            # the bench server trusts local connections, but dlt insists on a password
            "DESTINATION__POSTGRES__CREDENTIALS__PASSWORD": "unused",
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        }
        # peak_rss.py runs the pipeline as a module: bench/ is its sys.path[0]
        timed = run_timed([dlt_python, str(HERE / "peak_rss.py"), "dlt_retail_pipeline"], env)
        return {"total_s": timed.seconds, "rss_mb": timed.peak_rss_mb, "rows": json.loads(timed.stdout)}


def measure(sales: int, runs: int, dlt_python: str, variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"sales": sales, "runs": runs, "page_size": PAGE}
    ours: list[dict[str, Any]] = []
    theirs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with mock_api(sales) as url:
        limit = [bare_loop(url) for _ in range(runs)]
        out["source_limit_s"] = median([b[0] for b in limit])
        out["lines"] = limit[0][2]
        for _ in range(runs):
            ours.append(run_retailctl(url))
            for variant in variants:
                theirs[variant].append(run_dlt(url, dlt_python, variant))
    for result in ours:
        assert result["rows"]["sales_customer"] == sales, result["rows"]
        assert result["rows"]["sales_product"] == out["lines"], result["rows"]
    for variant, results in theirs.items():
        for result in results:
            assert result["rows"]["sales"] == sales, (variant, result["rows"])
            assert result["rows"]["sales__items"] == out["lines"], (variant, result["rows"])
    out["retailctl"] = {key: median([r[key] for r in ours]) for key in ours[0] if key != "rows"}
    out["retailctl"]["runs_s"] = [r["total_s"] for r in ours]
    out["dlt"] = {
        variant: {
            "total_s": median([r["total_s"] for r in results]),
            "rss_mb": max(r["rss_mb"] for r in results),
            "runs_s": [r["total_s"] for r in results],
        }
        for variant, results in theirs.items()
    }
    fastest = min(out["dlt"], key=lambda v: out["dlt"][v]["total_s"])
    out["dlt_fastest"] = fastest
    out["ratio"] = out["dlt"][fastest]["total_s"] / out["retailctl"]["total_s"]
    # the best ratio any reader paced by this source could reach: nothing but the source's time
    out["ceiling"] = out["dlt"][fastest]["total_s"] / out["source_limit_s"]
    return out


def report(m: dict[str, Any]) -> None:
    sales, ours = m["sales"], m["retailctl"]
    rows = [
        ("source limit (bare httpx+orjson)", f"{m['source_limit_s']:.1f} s"),
        ("retailctl extract (process)", f"{ours['extract_s']:.1f} s"),
        ("retailctl load (process)", f"{ours['load_s']:.1f} s"),
        ("retailctl extract + load", f"{ours['total_s']:.1f} s"),
        ("  sales/s", f"{sales / ours['total_s']:,.0f}"),
        ("  peak RSS extract / load", f"{ours['extract_rss_mb']:.0f} / {ours['load_rss_mb']:.0f} MB"),
    ]
    for variant, theirs in m["dlt"].items():
        rows += [
            (f"dlt {variant}", f"{theirs['total_s']:.1f} s"),
            ("  sales/s", f"{sales / theirs['total_s']:,.0f}"),
            ("  peak RSS", f"{theirs['rss_mb']:.0f} MB"),
            ("  dlt / retailctl", f"{theirs['total_s'] / ours['total_s']:.2f}x"),
        ]
    rows.append((f"ratio vs dlt's fastest ({m['dlt_fastest']})", f"{m['ratio']:.2f}x"))
    rows.append(("  ceiling: dlt's fastest / source limit", f"{m['ceiling']:.2f}x"))
    print_table(
        f"extract+load from empty, {sales:,} sales ({m['lines']:,} lines), page size {PAGE}, "
        f"median of {m['runs']}",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--dlt-python", default=os.environ.get("BENCH_DLT_PYTHON", "/work/venv-dlt/bin/python")
    )
    parser.add_argument("--variant", action="append", help="write_disposition:loader_file_format")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/dlt.json"))
    args = parser.parse_args()
    results = []
    for sales in args.sales or [50_000, 200_000]:
        started = time.perf_counter()
        result = measure(sales, args.runs, args.dlt_python, args.variant or DEFAULT_VARIANTS)
        report(result)
        print(f"  (measured in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f})")
        results.append(result)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
