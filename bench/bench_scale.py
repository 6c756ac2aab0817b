"""A history from empty at growing sizes, each step beside its floor, in one run (issue 14).

    python bench/bench_scale.py [--sales 200000 --sales 1000000 ...] [--layouts]

Per size, against the bundled mock API in its own process (page size 1000) and a scratch
database (RETAIL_BENCH_DATABASE_URL, default the local server):
  1. the source's limit, sampled: a bare httpx + orjson loop over the last 200k sales' pages
  2. `retailctl extract` and `retailctl load` from empty: rates and each process's peak RSS
  3. `retailctl transform` from empty, then the SQL floor: the same fact and mart as two
     hand-written `create table … as select` from silver (scale_sql.py), and their indexes
  4. `retailctl test` (everything) and `retailctl verify`
  5. an hourly `run-all` adding 1,000 sales; then 1,000 more extracted and loaded, and the
     statements dbt's incremental fact and mart would run now (from target/compiled and
     target/run, with today's watermarks) under EXPLAIN (ANALYZE, BUFFERS) in a transaction
     rolled back; the plans go to <json dir>/scale_plans_<sales>.txt and every sequential scan
     of a Gold or Silver table is listed; then that `retailctl transform` for real
  6. with --layouts, at the largest size: the fact with its btree indexes only, with the BRIN
     index on day the model adds, and partitioned by month, under three workloads (the hourly
     fact increment's delete+insert, the mart increment's recompute, a month of revenue by day)
Prints one table per size and writes everything as JSON (--json-out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_sql
from common import API_KEY, median, mock_api, print_table, retailctl, run_timed, scratch_database

PAGE = 1000
INCREMENT = 1_000
SOURCE_SAMPLE = 200_000
LITERAL = re.compile(r"'[^']*'::timestamptz")
DBT_TMP = re.compile(r'"(\w+)__dbt_tmp\d+"')
SEQ_SCAN = re.compile(r"Seq Scan on (\w+)(?: \w+)?\s+\(cost=[^)]*\)\s+\(actual time=[^ ]+ rows=(\d+)")


def source_sample(url: str, sales: int) -> tuple[float, int]:
    """The source's limit over the last SOURCE_SAMPLE sales (a page costs the same at any id)."""
    start = max(1, sales - SOURCE_SAMPLE + 1)
    count = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": API_KEY}) as client:
        while True:
            response = client.get("/sales", params={"start_sales_id": start, "limit": PAGE})
            items = orjson.loads(response.content)["items"]
            count += len(items)
            if len(items) < PAGE:
                break
            start = items[-1]["id"] + 1
    return time.perf_counter() - started, count


def timed_sql(conn: psycopg.Connection, statement: str | sql.Composable, params: Any = None) -> float:
    started = time.perf_counter()
    conn.execute(statement, params)  # type: ignore[arg-type]
    return time.perf_counter() - started


def build_floor(db_url: str) -> dict[str, Any]:
    """The SQL floor for Gold from empty: the fact and the mart as plain CTAS, then their indexes."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(scale_sql.FLOOR_SCHEMA)
        out = {
            "floor_fact_s": timed_sql(conn, scale_sql.FLOOR_FACT),
            "floor_mart_s": timed_sql(conn, scale_sql.FLOOR_MART),
        }
        out["floor_indexes_s"] = sum(
            timed_sql(conn, create_index("floor", table, columns))
            for table, indexes in (
                ("sales_item", scale_sql.FACT_INDEXES),
                ("mart_sales_by_customer", scale_sql.MART_INDEXES),
            )
            for columns in indexes
        ) + timed_sql(conn, scale_sql.BRIN_ON_DAY)
        counts = conn.execute(scale_sql.COUNTS).fetchone()
        assert counts is not None and counts[0] == counts[1] and counts[2] == counts[3], counts
        sizes = conn.execute(scale_sql.SIZES).fetchone()
        assert sizes is not None
        out.update(zip(("database_bytes", "fact_bytes", "mart_bytes", "lines_bytes"), sizes, strict=True))
        out["fact_rows"], out["mart_rows"] = counts[0], counts[2]
    return out


def create_index(schema: str, table: str, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("create index on {} ({})").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def incremental_statements(data_dir: str, model: str, folder: str, watermark: str) -> list[str]:
    """What dbt's incremental delete+insert runs for `model` now: its temp table from the compiled
    select (today's watermark in place of the last run's), then target/run's delete and insert."""
    target = Path(data_dir) / "dbt" / "target"
    compiled = (target / "compiled" / "retail" / "models" / folder / f"{model}.sql").read_text()
    assert LITERAL.search(compiled), f"{model}: the compiled SQL is not the incremental one"
    select = LITERAL.sub(lambda _: f"'{watermark}'::timestamptz", compiled)
    tmp = f"{model}__bench_tmp"
    statements = [f'create temporary table "{tmp}" as (\n{select}\n)']
    ran = (target / "run" / "retail" / "models" / folder / f"{model}.sql").read_text()
    statements += [DBT_TMP.sub(f'"{tmp}"', s).strip() for s in ran.split(";") if s.strip()]
    return statements


def explain_increment(db_url: str, data_dir: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the fact's and the mart's incremental statements, rolled back."""
    plans: list[str] = []
    out: dict[str, Any] = {"statements": []}
    with psycopg.connect(db_url) as conn:
        fact_mark = conn.execute(scale_sql.FACT_WATERMARK).fetchone()[0]  # type: ignore[index]
        mart_mark = conn.execute(scale_sql.MART_WATERMARK).fetchone()[0]  # type: ignore[index]
        steps = [("sales_item", s) for s in incremental_statements(data_dir, "sales_item", "core", fact_mark)]
        # the mart's statements are rendered before the fact's rows go in, as dbt compiles them
        steps += [
            ("mart_sales_by_customer", s)
            for s in incremental_statements(data_dir, "mart_sales_by_customer", "mart", mart_mark)
        ]
        for model, statement in steps:
            rows = conn.execute("explain (analyze, buffers) " + statement).fetchall()  # type: ignore[arg-type]
            plan = "\n".join(r[0] for r in rows)
            seconds = float(re.findall(r"Execution Time: ([\d.]+) ms", plan)[-1]) / 1000
            scans = [(table, int(n)) for table, n in SEQ_SCAN.findall(plan)]
            kind = statement.split()[0]
            out["statements"].append({"model": model, "kind": kind, "seconds": seconds, "seq_scans": scans})
            plans.append(f"-- {model}: {kind} ({seconds * 1000:.1f} ms)\n{statement}\n\n{plan}\n")
        conn.rollback()
    out["plans_text"] = "\n".join(plans)
    return out


def layouts(db_url: str, runs: int = 3) -> dict[str, Any]:
    """The fact as it is, with BRIN on day, partitioned by month: build time and three workloads."""
    out: dict[str, Any] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(scale_sql.DROP_BRIN_ON_DAY)  # "plain": the fact before the model had BRIN
        conn.execute(scale_sql.LAYOUT_SCHEMA)
        conn.execute(scale_sql.PARTITIONED_FACT)
        months = [row[0] for row in conn.execute(scale_sql.MONTHS).fetchall()]
        started = time.perf_counter()
        for month in months:
            end = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
            conn.execute(
                sql.SQL(scale_sql.PARTITION).format(
                    name=sql.Identifier(f"sales_item_{month:%Y_%m}"),
                    start=sql.Literal(month),
                    end=sql.Literal(end),
                )
            )
        conn.execute(scale_sql.FILL_PARTITIONED)
        out["partitioned_fill_s"] = time.perf_counter() - started
        out["partitioned_indexes_s"] = sum(
            timed_sql(conn, create_index("layout", "sales_item", c)) for c in scale_sql.FACT_INDEXES
        )
        out["partitions"] = len(months)
        conn.execute("analyze floor.sales_item")
        conn.execute("analyze layout.sales_item")
        top = conn.execute("select max(sale_id) - %s from floor.sales_item", (INCREMENT,)).fetchone()[0]  # type: ignore[index]
        month_start = months[len(months) // 2]

        def workloads(fact: str) -> dict[str, float]:
            def increment() -> float:
                with conn.transaction(force_rollback=True):
                    conn.execute(scale_sql.INCREMENT_BATCH.format(fact=fact), (top,))  # type: ignore[arg-type]
                    started = time.perf_counter()
                    conn.execute(scale_sql.INCREMENT_DELETE.format(fact=fact))  # type: ignore[arg-type]
                    conn.execute(scale_sql.INCREMENT_INSERT.format(fact=fact))  # type: ignore[arg-type]
                    return time.perf_counter() - started

            def query(statement: str, params: tuple[Any, ...]) -> Callable[[], float]:
                return lambda: timed_sql(conn, statement.format(fact=fact), params)

            return {
                "increment_s": median([increment() for _ in range(runs)]),
                "mart_recompute_s": median([query(scale_sql.MART_RECOMPUTE, (top,))() for _ in range(runs)]),
                "month_by_day_s": median(
                    [query(scale_sql.MONTH_BY_DAY, (month_start, month_start))() for _ in range(runs)]
                ),
            }

        out["plain"] = workloads("floor.sales_item")
        out["partitioned"] = workloads("layout.sales_item")
        out["brin_build_s"] = timed_sql(conn, scale_sql.BRIN_ON_DAY)
        conn.execute("analyze floor.sales_item")
        out["brin"] = workloads("floor.sales_item")
    return out


def measure(sales: int, json_dir: Path, with_layouts: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"sales": sales}
    with tempfile.TemporaryDirectory() as data_dir, scratch_database() as db_url:
        env = {
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_DATA_DIR": data_dir,
            "RETAIL_PAGE_SIZE": str(PAGE),
            "RETAIL_TRIGGER": "bench",
        }

        def step(name: str, *args: str) -> Any:
            timed = run_timed(retailctl(*args), env)
            out[f"{name}_wall_s"], out[f"{name}_rss_mb"] = timed.seconds, timed.peak_rss_mb
            print(f"  {name}: {timed.seconds:.1f} s, {timed.peak_rss_mb:.0f} MB", flush=True)
            return timed

        with mock_api(sales) as url:
            env["RETAIL_API_URL"] = url
            out["source_sample_s"], out["source_sample_sales"] = source_sample(url, sales)
            extract = json.loads(step("extract", "extract", "--json").stdout)
            result = next(e for e in extract["entities"] if e["entity"] == "sales")
            out["extract_s"], out["lines"] = result["seconds"], result["lines"]
            load = json.loads(step("load", "load", "--json").stdout)
            out["load_s"], out["rows"] = load["seconds"], sum(t["rows"] for t in load["tables"].values())
            step("transform", "transform")
            out.update(build_floor(db_url))
            step("test", "test")
            step("verify", "verify")
        with mock_api(sales + INCREMENT) as url:
            env["RETAIL_API_URL"] = url
            step("hourly_run_all", "run-all")
        with mock_api(sales + 2 * INCREMENT) as url:
            env["RETAIL_API_URL"] = url
            run_timed(retailctl("extract"), env)
            run_timed(retailctl("load"), env)
        explained = explain_increment(db_url, data_dir)
        (json_dir / f"scale_plans_{sales}.txt").write_text(explained.pop("plans_text"))
        out["increment_plans"] = explained
        step("hourly_transform", "transform")
        if with_layouts:
            out["layouts"] = layouts(db_url)
    return out


def report(m: dict[str, Any]) -> None:
    sales, lines, rows = m["sales"], m["lines"], m["rows"]
    floor = m["floor_fact_s"] + m["floor_mart_s"]
    floor_indexed = floor + m["floor_indexes_s"]
    m.update(
        source_sales_s=m["source_sample_sales"] / m["source_sample_s"],
        extract_sales_s=sales / m["extract_s"],
        extract_lines_s=lines / m["extract_s"],
        load_rows_s=rows / m["load_s"],
        floor_s=floor,
        floor_indexed_s=floor_indexed,
    )
    table = [
        ("1 source limit (last 200k sales)", f"{m['source_sales_s']:,.0f} sales/s"),
        ("2 extract", f"{m['extract_sales_s']:,.0f} sales/s"),
        ("  extract", f"{m['extract_lines_s']:,.0f} lines/s"),
        ("  extract process / peak RSS", f"{m['extract_wall_s']:.0f} s / {m['extract_rss_mb']:.0f} MB"),
        ("  load", f"{m['load_rows_s']:,.0f} rows/s"),
        ("  load process / peak RSS", f"{m['load_wall_s']:.0f} s / {m['load_rss_mb']:.0f} MB"),
        ("3 transform from empty", f"{m['transform_wall_s']:.1f} s"),
        ("  transform peak RSS", f"{m['transform_rss_mb']:.0f} MB"),
        ("  SQL floor: CTAS fact + mart", f"{floor:.1f} s"),
        ("  SQL floor + the models' indexes", f"{floor_indexed:.1f} s"),
        ("  transform / floor (CTAS)", f"{m['transform_wall_s'] / floor:.2f}x"),
        ("  transform / floor + indexes", f"{m['transform_wall_s'] / floor_indexed:.2f}x"),
        ("4 test (everything)", f"{m['test_wall_s']:.1f} s"),
        ("  test peak RSS", f"{m['test_rss_mb']:.0f} MB"),
        ("  verify", f"{m['verify_wall_s']:.1f} s"),
        ("  verify peak RSS", f"{m['verify_rss_mb']:.0f} MB"),
        (f"5 hourly run-all, +{INCREMENT:,} sales", f"{m['hourly_run_all_wall_s']:.1f} s"),
        (f"  hourly transform, +{INCREMENT:,} sales", f"{m['hourly_transform_wall_s']:.1f} s"),
    ]
    for s in m["increment_plans"]["statements"]:
        scans = ", ".join(f"{t} ({n:,})" for t, n in s["seq_scans"]) or "none"
        table.append((f"  {s['model']} {s['kind']}", f"{s['seconds'] * 1000:.0f} ms, seq scans: {scans}"))
    table += [
        ("  fact / mart rows", f"{m['fact_rows']:,} / {m['mart_rows']:,}"),
        ("  database / fact size", f"{m['database_bytes'] / 2**30:.2f} / {m['fact_bytes'] / 2**30:.2f} GiB"),
    ]
    if "layouts" in m:
        lay = m["layouts"]
        for name in ("plain", "brin", "partitioned"):
            w = lay[name]
            table.append(
                (
                    f"6 fact {name}: increment / mart / month",
                    f"{w['increment_s'] * 1000:.0f} / {w['mart_recompute_s'] * 1000:.0f} / "
                    f"{w['month_by_day_s'] * 1000:.0f} ms",
                )
            )
        table.append(
            (
                "  partitions / fill + indexes",
                f"{lay['partitions']} / {lay['partitioned_fill_s'] + lay['partitioned_indexes_s']:.1f} s",
            )
        )
        table.append(("  BRIN build", f"{lay['brin_build_s']:.1f} s"))
    print_table(f"retailctl at scale, {sales:,} sales ({lines:,} lines, {rows:,} silver rows)", table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sales", type=int, action="append")
    parser.add_argument("--layouts", action="store_true", help="compare fact layouts at the largest size")
    parser.add_argument("--json-out", type=Path, default=Path("bench/results/scale.json"))
    args = parser.parse_args()
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    sizes = args.sales or [200_000, 1_000_000]
    results = []
    for sales in sizes:
        started = time.perf_counter()
        print(f"{sales:,} sales (load average {os.getloadavg()[0]:.1f})", flush=True)
        result = measure(sales, args.json_out.parent, args.layouts and sales == max(sizes))
        result["measured_s"] = time.perf_counter() - started
        result["load_average_end"] = os.getloadavg()
        report(result)
        print(
            f"  (measured in {result['measured_s']:.0f} s, load average {os.getloadavg()[0]:.1f})", flush=True
        )
        results.append(result)
        args.json_out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
