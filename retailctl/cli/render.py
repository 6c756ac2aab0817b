"""Results as people read them: one line per thing in cron logs, tables on a terminal."""

from __future__ import annotations

from typing import Any

from retailctl import gold
from retailctl.cli import console
from retailctl.errors import StepFailed
from retailctl.load import LoadResult


def render_load(result: LoadResult, *, dry_run: bool, as_json: bool) -> None:
    """The load summary; a file that did not load is an error line each, and exit 1."""
    if as_json:
        console.print_json(result.to_dict())
    elif dry_run:
        for path in result.pending:
            console.say(f"would load {path}")
        console.say(f"{len(result.pending)} file(s) would load")
    else:
        for table in result.tables.values():
            console.say(table.summary())
        rate = result.rows / result.seconds if result.seconds else 0.0
        console.say(f"loaded {result.rows} rows in {result.seconds:.1f}s ({rate:,.0f} rows/s)")
    for problem in result.errors:
        console.error(problem)
    if result.errors:
        raise StepFailed(f"{len(result.errors)} bronze file(s) not loaded; the others were")


def render_dbt(results: list[gold.DbtResult]) -> None:
    """One line per dbt node: models with their rows, tests with their failing rows."""
    for result in results:
        for node in result.nodes:
            detail = f", {node.rows_affected} rows" if node.rows_affected not in (None, -1) else ""
            if node.kind in ("test", "source"):
                detail = f", {node.failures} failing row(s)" if node.failures is not None else ""
            elif node.kind == "unit_test":
                detail = ""  # rows_affected would count its fixture rows, not the project's
            console.say(f"{node.kind} {node.name}: {node.status} in {node.seconds:.2f}s{detail}")


def render_step(name: str, result: Any) -> None:
    """One run-all step's outcome (None: skipped)."""
    if result is None:
        console.say(f"{name}: skipped, nothing new in silver since the last build")
    elif name == "extract":
        for entity in result:
            console.say(f"extract {entity.summary()}")
    elif name == "load":
        for table in result.tables.values():
            console.say(f"load {table.summary()}")
    else:
        render_dbt(result)


def render_status(collected: dict[str, Any]) -> None:
    """What `retailctl status` shows a person on call."""
    cursor = collected["cursor"]
    console.say(f"next sales id: {cursor['next_sales_id']} (last extract: "
                f"{cursor['last_run_ts'] or 'never'})")
    console.say(f"lock: {collected['lock_holder'] or 'free'}")
    console.table("recent runs", ("started", "trigger", "status", "seconds", "error"), [
        (f"{r['started_at']:%Y-%m-%d %H:%M:%S}", r["trigger"], r["status"],
         f"{r['seconds']:.1f}" if r["seconds"] is not None else "-", r["error"] or "")
        for r in collected["runs"]])
    rows = [("bronze files", name, count) for name, count in collected["bronze_files"].items()]
    rows += [("silver rows", name, "-" if n is None else n)
             for name, n in collected["silver_rows"].items()]
    rows += [("gold rows", name, "-" if n is None else n)
             for name, n in collected["gold_rows"].items()]
    console.table("rows per layer", ("layer", "table", "count"), rows)
    console.table("silver freshness", ("table", "last loaded"), [
        (name, at or "never") for name, at in collected["silver_loaded_at"].items()])
    console.say(f"rejected records: {collected['rejected_records']['total']} "
                f"({collected['rejected_records']['last_24h']} in the last 24 h); "
                f"inconsistent sale totals: {collected['inconsistent_totals']}")
