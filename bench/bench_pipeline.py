"""The whole pipeline beside this machine's limits, in one run (issue: speed at scale).

    python bench/bench_pipeline.py [--sales 200000] [--sales 1000000 ...] [--runs 3]

Per size, against the bundled mock API in its own process and a scratch database
(RETAIL_BENCH_DATABASE_URL, default the local server):
  1. the source's limit: a bare httpx + orjson loop over every /sales page (page size 1000)
  2. `retailctl extract`: sales/s, lines/s, peak RSS
  3. the database's limit: a bare COPY of the same rows into empty keyed tables
  4. `retailctl load`: rows/s, peak RSS
  5. `retailctl transform` from empty, then hourly increments: 1,000 new sales each, `run-all`
     as cron runs it (a fresh process), beside the dbt floor measured in the same run: a fresh
     process importing dbt and making one dbtRunner invocation that builds one trivial model,
     partial-parse cache warm (bench/dbt_floor.py); and that floor again ending as retailctl
     does (`gc.freeze()` before the interpreter's shutdown), so no ratio owes anything to it
  6. `run-all` with nothing new (an idle hour), beside `retailctl --version` (Python start-up
     and the CLI's imports); and again against the mock `--latency-ms 50`, a source farther
     away than loopback (the lookback window's pages are requested together)
Prints one table per size and writes everything as JSON (--json-out); `--markdown JSON` prints
the README's table from such a file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import bare_loop
from bench_load import bare_copy, render_copy_data
from common import API_KEY, Timed, median, mock_api, print_table, retailctl, run_timed, scratch_database
from dbt_floor import write_project

from retailctl import gold

PAGE = "1000"
INCREMENT = 1_000
FROZEN = "dbt_floor_frozen_s"  # not in the JSON of a run before the floor had that variant
LATENCY_MS = 50  # the idle run again, against a source this far away
LATENT = "idle_latent_s"  # not in the JSON of a run before that row
# what retailctl passes to run-all's dbt invocations, given to the floor too (a checkout older
# than RUNNER_FLAGS passed these; the floor is the same in both)
OLD_FLAGS = ["--log-level", "none", "--log-level-file", "debug", "--no-use-colors"]
RUNNER_FLAGS = getattr(gold, "RUNNER_FLAGS", OLD_FLAGS) + getattr(gold, "HOURLY_FLAGS", ["--no-write-json"])


def cpu_timed(args: list[str], env: dict[str, str]) -> tuple[Timed, float]:
    """run_timed, and the CPU seconds (user + system) the command used: on a busy machine wall
    times swell with the load, the CPU a process uses much less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    timed = run_timed(args, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return timed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians(samples: list[tuple[Timed, float]]) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds."""
    return median([timed.seconds for timed, _ in samples]), median([cpu for _, cpu in samples])


def dbt_floor(env: dict[str, str], db_url: str, runs: int) -> dict[str, float]:
    """Median wall and CPU time of bench/dbt_floor.py in a fresh process, after one untimed
    warm-up; as the issue defines it and ending as retailctl does (`_frozen`), interleaved."""
    with tempfile.TemporaryDirectory() as root:
        write_project(Path(root))
        args = [sys.executable, str(Path(__file__).resolve().parent / "dbt_floor.py"), root, *RUNNER_FLAGS]
        floor_env = {**env, **gold.dbt_environment(db_url)}
        run_timed(args, floor_env)  # warm: dbt's partial-parse cache written
        plain, frozen = [], []
        for _ in range(runs):
            plain.append(cpu_timed(args, floor_env))
            frozen.append(cpu_timed([*args, "--freeze-at-exit"], floor_env))
    (wall, cpu), (frozen_wall, frozen_cpu) = medians(plain), medians(frozen)
    return {
        "dbt_floor_s": wall,
        "dbt_floor_cpu_s": cpu,
        "dbt_floor_frozen_s": frozen_wall,
        "dbt_floor_frozen_cpu_s": frozen_cpu,
    }


def hourly(env: dict[str, str], sales: int, runs: int) -> dict[str, Any]:
    """`runs` hourly `run-all`s, each adding INCREMENT sales; medians of the wall time and of
    each step's own seconds (from --json)."""
    samples: list[tuple[Timed, float]] = []
    steps: dict[str, list[float]] = {}
    for run in range(1, runs + 1):
        with mock_api(sales + run * INCREMENT) as url:
            samples.append(cpu_timed(retailctl("run-all", "--json"), {**env, "RETAIL_API_URL": url}))
        for step in json.loads(samples[-1][0].stdout)["steps"]:
            steps.setdefault(step["step"], []).append(step["seconds"])
    wall, cpu = medians(samples)
    out = {"increment_s": wall, "increment_cpu_s": cpu, "increment_runs_s": [t.seconds for t, _ in samples]}
    return out | {f"increment_{step}_s": median(seconds) for step, seconds in steps.items()}


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
        out.update(hourly(env, sales, runs))
        out.update(dbt_floor(env, db_url, runs))
        with mock_api(sales + runs * INCREMENT) as url:
            env["RETAIL_API_URL"] = url
            idle = [cpu_timed(retailctl("run-all"), env) for _ in range(runs)]
            out["idle_s"], out["idle_cpu_s"] = medians(idle)
        with mock_api(sales + runs * INCREMENT, ["--latency-ms", str(LATENCY_MS)]) as url:
            latent = [cpu_timed(retailctl("run-all"), {**env, "RETAIL_API_URL": url}) for _ in range(runs)]
            out[LATENT], out["idle_latent_cpu_s"] = medians(latent)
        version = [cpu_timed(retailctl("--version"), env) for _ in range(runs)]
        out["version_s"], out["version_cpu_s"] = medians(version)
    return out


def report_rates(m: dict[str, Any]) -> None:
    """The rates the table shows, added to `m` (and so to the JSON)."""
    sales, rows = m["sales"], m["rows"]
    m.update(
        source_limit_sales_s=sales / m["source_limit_s"],
        extract_sales_s=sales / m["extract_s"],
        copy_limit_rows_s=rows / m["copy_limit_s"],
        load_rows_s=rows / m["load_s"],
        extract_load_sales_s=sales / (m["extract_s"] + m["load_s"]),
    )


def report(m: dict[str, Any]) -> None:
    sales, lines, rows = m["sales"], m["lines"], m["rows"]
    report_rates(m)
    source, extract, end_to_end = m["source_limit_sales_s"], m["extract_sales_s"], m["extract_load_sales_s"]
    copy_limit, load = m["copy_limit_rows_s"], m["load_rows_s"]
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
            ("  dbt floor (fresh process, one trivial model)", f"{m['dbt_floor_s']:.2f} s"),
            (f"  hourly run-all, +{INCREMENT:,} sales", f"{m['increment_s']:.2f} s"),
            ("    of which extract + load", f"{m['increment_extract_s'] + m['increment_load_s']:.2f} s"),
            ("    of which transform + test", f"{m['increment_transform_s'] + m['increment_test_s']:.2f} s"),
            ("  hourly run-all / dbt floor", f"{m['increment_s'] / m['dbt_floor_s']:.2f}x"),
            ("  the same in CPU seconds", f"{m['increment_cpu_s'] / m['dbt_floor_cpu_s']:.2f}x"),
            ("  dbt floor ending as retailctl does (gc.freeze)", f"{m['dbt_floor_frozen_s']:.2f} s"),
            ("  hourly run-all / that floor (wall / CPU)", ratio(m, "increment", "dbt_floor_frozen")),
            ("6 retailctl --version", f"{m['version_s']:.2f} s"),
            ("  idle run-all (nothing new)", f"{m['idle_s']:.2f} s"),
            ("  idle run-all / --version", f"{m['idle_s'] / m['version_s']:.2f}x"),
            ("  the same in CPU seconds", f"{m['idle_cpu_s'] / m['version_cpu_s']:.2f}x"),
            (f"  idle run-all, source {LATENCY_MS} ms away", f"{m[LATENT]:.2f} s"),
        ],
    )


def share(m: dict[str, Any], rate: str, limit: str) -> str:
    return f"{m[rate] / m[limit]:.0%}"


def ratio(m: dict[str, Any], measured: str, floor: str) -> str:
    """`measured` over `floor`, in wall time and in CPU seconds."""
    wall = m[f"{measured}_s"] / m[f"{floor}_s"]
    return f"{wall:.2f}x / {m[f'{measured}_cpu_s'] / m[f'{floor}_cpu_s']:.2f}x"


def markdown(results: list[dict[str, Any]]) -> str:
    """The README's table, columns per size, from one run's JSON (never typed by hand)."""
    for m in results:
        report_rates(m)

    def row(label: str, cell: Any) -> str:
        return "| " + " | ".join([label, *(cell(m) for m in results)]) + " |"

    lines = [
        "| | " + " | ".join(f"{m['sales']:,} sales ({m['lines']:,} lines)" for m in results) + " |",
        "| --- |" + " ---: |" * len(results),
        row("source limit: bare httpx + orjson loop", lambda m: f"{m['source_limit_sales_s']:,.0f} sales/s"),
        row(
            "`retailctl extract` (page size 1000)",
            lambda m: (
                f"{m['extract_sales_s']:,.0f} sales/s ({share(m, 'extract_sales_s', 'source_limit_sales_s')})"
            ),
        ),
        row("extract peak RSS", lambda m: f"{m['extract_rss_mb']:.0f} MB"),
        row("database limit: bare COPY into keyed tables", lambda m: f"{m['copy_limit_rows_s']:,.0f} rows/s"),
        row(
            "`retailctl load` (upserts and manifest included)",
            lambda m: f"{m['load_rows_s']:,.0f} rows/s ({share(m, 'load_rows_s', 'copy_limit_rows_s')})",
        ),
        row("load peak RSS", lambda m: f"{m['load_rss_mb']:.0f} MB"),
        row("extract + load, end to end", lambda m: f"{m['extract_load_sales_s']:,.0f} sales/s"),
        row("`retailctl transform` from empty", lambda m: f"{m['transform_s']:.1f} s"),
        row("dbt floor: fresh process, one trivial model", lambda m: f"{m['dbt_floor_s']:.2f} s"),
        row(f"hourly `run-all` adding {INCREMENT:,} sales", lambda m: f"{m['increment_s']:.2f} s"),
        row(
            "hourly `run-all` / dbt floor (wall / CPU)",
            lambda m: f"{ratio(m, 'increment', 'dbt_floor')}",
        ),
        row(
            "dbt floor ending as retailctl does (`gc.freeze()`)",
            lambda m: f"{m['dbt_floor_frozen_s']:.2f} s" if FROZEN in m else "not measured",
        ),
        row(
            "hourly `run-all` / that floor (wall / CPU)",
            lambda m: ratio(m, "increment", "dbt_floor_frozen") if FROZEN in m else "not measured",
        ),
        row("`retailctl --version`", lambda m: f"{m['version_s']:.2f} s"),
        row("idle `run-all` (nothing new, lookback 5,000)", lambda m: f"{m['idle_s']:.2f} s"),
        row(
            "idle `run-all` / `--version` (wall / CPU)",
            lambda m: ratio(m, "idle", "version"),
        ),
        row(
            f"idle `run-all`, the source {LATENCY_MS} ms away (`--latency-ms {LATENCY_MS}`)",
            lambda m: f"{m[LATENT]:.2f} s" if LATENT in m else "not measured",
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--runs", type=int, default=3, help="medians of this many, where cheap")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/pipeline.json"))
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print the README table of a run's JSON"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    results = []
    for sales in args.sales or [200_000]:
        started, load_before = time.perf_counter(), os.getloadavg()[0]
        result = measure(sales, args.runs)
        result["load_average"] = [load_before, os.getloadavg()[0]]
        report(result)
        print(
            f"  (measured in {time.perf_counter() - started:.0f} s; 1-minute load average "
            f"{load_before:.1f} at the start, {result['load_average'][1]:.1f} at the end)"
        )
        results.append(result)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
