"""Corrections at scale (issue 12): an hourly run with corrections beside one without, the
idle run with the lookback on, and `verify`, in one run.

    python bench/bench_changes.py [--sales 200000] [--sales 2000000 ...] [--runs 3]

Per history size H, against one bundled mock API process (serving H + 2 x runs x 1,000 sales)
and a scratch database (RETAIL_BENCH_DATABASE_URL, default the local server), with
RETAIL_SALES_LOOKBACK=5000 throughout:
  1. the history, untimed: `extract` of the first H sales, `load`, `transform`, `test --changed`
  2. `runs` pairs of hourly `run-all`, each run capped at 1,000 new sales
     (RETAIL_MAX_SALES_PER_RUN, the way an hour's new sales arrive): one plain, then one after
     the mock corrected 50 of the sales already read, inside the lookback
     (`POST /_admin/corrections?count=50&window=4000&before=<cursor>`); medians of each, and
     the sales each rewrote in silver (load's `updated`), which must be 0 and 50
  3. `run-all` once the source has nothing new (the lookback still re-reads 5,000 sales),
     beside `retailctl --version` (the interpreter and imports: the floor of any command)
  4. `retailctl verify --json`: wall time and its own peak RSS (bench_verify.py measures its
     split between the bronze scan and the database)
Prints one table per size and writes the figures as JSON (--json-out); `--markdown JSON`
prints the README's table from such a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import API_KEY, median, mock_api, print_table, retailctl, run_timed, scratch_database

PAGE = "1000"
LOOKBACK = 5_000
INCREMENT = 1_000
CORRECTIONS = 50
CORRECTION_WINDOW = 4_000  # below the cursor: every corrected sale was read, and is in the lookback


def measure(sales: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sales": sales, "runs": runs}
    served = sales + 2 * runs * INCREMENT
    with (
        tempfile.TemporaryDirectory() as data_dir,
        scratch_database() as db_url,
        mock_api(served) as url,
    ):
        env = {
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_API_URL": url,
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_DATA_DIR": data_dir,
            "RETAIL_PAGE_SIZE": PAGE,
            "RETAIL_TRIGGER": "bench",
            "RETAIL_SALES_LOOKBACK": str(LOOKBACK),
            "RETAIL_MAX_SALES_PER_RUN": str(sales),
        }
        started = time.perf_counter()
        for step in (("extract",), ("load",), ("transform",), ("test", "--changed")):
            run_timed(retailctl(*step), env)
        out["history_build_s"] = time.perf_counter() - started
        env["RETAIL_MAX_SALES_PER_RUN"] = str(INCREMENT)
        plain, corrected = [], []
        for _ in range(runs):
            plain.append(_hourly(env, "plain"))
            cursor = json.loads(run_timed(retailctl("state", "show", "--json"), env).stdout)["next_sales_id"]
            response = httpx.post(
                url + "/_admin/corrections",
                params={"count": CORRECTIONS, "window": CORRECTION_WINDOW, "before": cursor},
                headers={"Authorization": API_KEY},
            )
            response.raise_for_status()
            corrected.append(_hourly(env, "corrected"))
        out["plain_s"] = median([seconds for seconds, _ in plain])
        out["plain_rewritten"] = [rewritten for _, rewritten in plain]
        out["corrected_s"] = median([seconds for seconds, _ in corrected])
        out["corrected_rewritten"] = [rewritten for _, rewritten in corrected]
        idle = [_hourly(env, "idle") for _ in range(runs)]
        assert all(rewritten == 0 for _, rewritten in idle), idle
        out["idle_s"] = median([seconds for seconds, _ in idle])
        out["version_s"] = median([run_timed(retailctl("--version"), env).seconds for _ in range(runs)])
        timings = []
        for _ in range(runs):
            timed = run_timed(retailctl("verify", "--json"), env)
            document = json.loads(timed.stdout)
            assert document["ok"], document["summary"]
            timings.append((timed.seconds, timed.peak_rss_mb))
        out["lines"] = document["totals"]["bronze"]["lines"]
        out["days"] = document["days"]
        out["verify_s"] = median([t[0] for t in timings])
        out["verify_rss_mb"] = median([t[1] for t in timings])
    out["step_seconds"] = {kind: _steps_line(runs) for kind, runs in STEP_SECONDS.items()}
    STEP_SECONDS.clear()
    return out


STEP_SECONDS: dict[str, list[dict[str, float]]] = {}  # per kind of run: each run's step seconds


def _hourly(env: dict[str, str], kind: str) -> tuple[float, int]:
    """One `run-all`: its wall time, and the sales it rewrote in silver."""
    timed = run_timed(retailctl("run-all", "--json"), env)
    steps = {step["step"]: step for step in json.loads(timed.stdout)["steps"]}
    STEP_SECONDS.setdefault(kind, []).append({name: round(s["seconds"], 2) for name, s in steps.items()})
    return timed.seconds, steps["load"]["counts"].get("sales_customer", {}).get("updated", 0)


def _steps_line(runs: list[dict[str, float]]) -> str:
    return " ".join(f"{name[:2]} {median([r[name] for r in runs]):.1f}" for name in runs[0])


def report(m: dict[str, Any]) -> None:
    print_table(
        f"retailctl corrections, {m['sales']:,} sales of history ({m['lines']:,} lines, {m['days']} days)",
        [
            ("history build (untimed steps)", f"{m['history_build_s']:.0f} s"),
            (f"hourly run-all, +{INCREMENT:,} sales", f"{m['plain_s']:.2f} s"),
            (f"  + {CORRECTIONS} corrections", f"{m['corrected_s']:.2f} s"),
            ("  corrections cost", f"{m['corrected_s'] - m['plain_s']:+.2f} s"),
            ("  steps (plain)", m["step_seconds"]["plain"]),
            ("  steps (corrected)", m["step_seconds"]["corrected"]),
            ("  sales rewritten (plain)", ",".join(map(str, m["plain_rewritten"]))),
            ("  sales rewritten (corrected)", ",".join(map(str, m["corrected_rewritten"]))),
            (f"idle run-all (lookback {LOOKBACK:,})", f"{m['idle_s']:.2f} s"),
            ("  steps (idle)", m["step_seconds"]["idle"]),
            ("  retailctl --version", f"{m['version_s']:.2f} s"),
            ("verify", f"{m['verify_s']:.1f} s"),
            ("  verify peak RSS", f"{m['verify_rss_mb']:.0f} MB"),
        ],
    )


def markdown(results: list[dict[str, Any]]) -> str:
    """The README's table, columns per history size, from one run's JSON (never typed by hand)."""

    def row(label: str, cell: Any) -> str:
        return "| " + " | ".join([label, *(cell(m) for m in results)]) + " |"

    def steps(line: str) -> str:
        return (
            line.replace("ex ", "extract ")
            .replace(" lo ", ", load ")
            .replace(" tr ", ", transform ")
            .replace(" te ", ", test ")
        )

    lines = [
        "| | "
        + " | ".join(f"{m['sales']:,} sales ({m['lines']:,} lines, {m['days']:,} days)" for m in results)
        + " |",
        "| --- |" + " ---: |" * len(results),
        row(
            f"hourly `run-all`, +{INCREMENT:,} sales",
            lambda m: f"{m['plain_s']:.2f} s ({steps(m['step_seconds']['plain'])})",
        ),
        row(
            f"the same + {CORRECTIONS} corrections",
            lambda m: f"{m['corrected_s']:.2f} s ({steps(m['step_seconds']['corrected'])})",
        ),
        row("corrections' cost", lambda m: f"{m['corrected_s'] - m['plain_s']:+.2f} s"),
        row(
            "sales load rewrote (plain / corrected runs)",
            lambda m: (
                f"{','.join(map(str, m['plain_rewritten']))} / {','.join(map(str, m['corrected_rewritten']))}"
            ),
        ),
        row(
            f"idle `run-all` ({LOOKBACK:,} sales re-read, unchanged)",
            lambda m: f"{m['idle_s']:.2f} s ({steps(m['step_seconds']['idle'])})",
        ),
        row("`retailctl --version`", lambda m: f"{m['version_s']:.2f} s"),
        row("`retailctl verify`", lambda m: f"{m['verify_s']:.1f} s, peak RSS {m['verify_rss_mb']:.0f} MB"),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--runs", type=int, default=3, help="medians of this many")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/changes.json"))
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print the README table of a run's JSON"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    results = []
    for sales in args.sales or [200_000]:
        started = time.perf_counter()
        result = measure(sales, args.runs)
        report(result)
        print(f"  (measured in {time.perf_counter() - started:.0f} s)", flush=True)
        results.append(result)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
