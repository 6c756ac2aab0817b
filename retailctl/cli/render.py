"""Results as people read them: one line per thing in cron logs, live progress and tables on a
terminal, and the tally that closes a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retailctl import gold, pipeline
from retailctl.cli import console
from retailctl.errors import StepFailed, step_of
from retailctl.load import LoadResult

if TYPE_CHECKING:
    from retailctl.doctor import Check
    from retailctl.verify import VerifyResult


def render_load(result: LoadResult, *, dry_run: bool, as_json: bool, bronze_dir: str | Path) -> None:
    """The load summary; a file that did not load, or had lines quarantined, is an error line
    each, and exit 1."""
    if as_json and not result.failure():
        console.print_json(result.to_dict())
    elif as_json:
        pass  # the error object is the document
    elif result.found == 0:
        console.say(f"no bronze files under {bronze_dir}: run `retailctl extract` first")
    elif dry_run:
        for path in result.pending:
            console.say(f"would load {path}")
        console.say(f"{len(result.pending)} file(s) would load")
    else:
        for table in result.tables.values():
            console.info(table.summary(), step="load")
        rate = result.rows / result.seconds if result.seconds else 0.0
        console.info(f"loaded {result.rows} rows in {result.seconds:.1f}s ({rate:,.0f} rows/s)", step="load")
    for problem in [*result.errors, *result.quarantined]:
        console.error(problem)
    failure = result.failure()
    if failure:
        raise StepFailed(failure)


def render_dbt(results: list[gold.DbtResult], step: str = "") -> None:
    """One line per dbt node: models with their rows, tests with their failing rows."""
    for result in results:
        for node in result.nodes:
            detail = f", {node.rows_affected} rows" if node.rows_affected not in (None, -1) else ""
            if node.kind in ("test", "source"):
                detail = f", {node.failures} failing row(s)" if node.failures is not None else ""
            elif node.kind == "unit_test":
                detail = ""  # rows_affected would count its fixture rows, not the project's
            console.info(
                f"{node.kind} {node.name}: {node.status} in {node.seconds:.2f}s{detail}", step=step or None
            )


def render_step(name: str, result: Any) -> None:
    """One run-all step's outcome (None: skipped)."""
    if result is None:
        console.info(f"{name}: skipped, nothing new in silver since the last build", step=name)
    elif name == "extract":
        for entity in result:
            console.info(f"extract {entity.summary()}", step=name)
    elif name == "load":
        for table in result.tables.values():
            console.info(f"load {table.summary()}", step=name)
    else:
        render_dbt(result, name)


def render_status(collected: dict[str, Any]) -> None:
    """What `retailctl status` shows a person on call."""
    if not collected["initialised"]:
        console.say(f"database {collected['database']}")
        return
    cursor = collected["cursor"]
    console.say(
        f"next sales id: {cursor['next_sales_id']} (last extract: {cursor['last_run_ts'] or 'never'})"
    )
    holder = collected["lock_holder"]
    console.say(f"lock: {holder.describe() if holder else 'free'}")
    console.table(
        "recent runs",
        ("started", "trigger", "host", "status", "seconds", "error"),
        [
            (
                f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                r["trigger"],
                r["host"] or "-",
                r["status"],
                f"{r['seconds']:.1f}" if r["seconds"] is not None else "-",
                r["error"] or "",
            )
            for r in collected["runs"]
        ],
    )
    rows = [("bronze files", name, count) for name, count in collected["bronze_files"].items()]
    rows += [("silver rows", name, "-" if n is None else n) for name, n in collected["silver_rows"].items()]
    rows += [("gold rows", name, "-" if n is None else n) for name, n in collected["gold_rows"].items()]
    console.table("rows per layer", ("layer", "table", "count"), rows)
    console.table(
        "silver freshness",
        ("table", "last loaded"),
        [(name, at or "never") for name, at in collected["silver_loaded_at"].items()],
    )
    console.say(
        f"rejected records: {collected['rejected_records']['total']} "
        f"({collected['rejected_records']['last_24h']} in the last 24 h); "
        f"inconsistent sale totals: {collected['inconsistent_totals']}; "
        f"lines quarantined by load: {collected['quarantined_lines']}"
    )


@dataclass
class Tally:
    """A run in numbers: the closing line of run-all and its --json."""

    steps: int = 0
    skipped: int = 0
    bronze_rows: int = 0  # written to bronze files (sale lines included)
    silver_rows: int = 0  # inserted or updated
    gold_rows: int = 0  # rows the models and the snapshot wrote
    tests_passed: int = 0
    tests_failed: int = 0


def tally(run: pipeline.RunResult, results: dict[str, Any]) -> Tally:
    counted = Tally(steps=len(run.steps), skipped=sum(s.status == "skipped" for s in run.steps))
    for entity in results.get("extract") or []:
        counted.bronze_rows += (entity.records + entity.lines) if entity.files else 0
    if results.get("load") is not None:
        counted.silver_rows = sum(t.inserted + t.updated for t in results["load"].tables.values())
    for result in results.get("transform") or []:
        counted.gold_rows += sum(n.rows_affected for n in result.nodes if (n.rows_affected or 0) > 0)
    for result in results.get("test") or []:
        failing = len(result.failed)
        counted.tests_failed += failing
        skipped = sum(node.status == "skipped" for node in result.nodes)  # after a failure upstream
        counted.tests_passed += len(result.nodes) - failing - skipped
    return counted


def tally_line(run: pipeline.RunResult, counted: Tally, failed_step: str | None = None) -> str:
    outcome = f"failed at {failed_step}" if failed_step else "succeeded"
    skipped = f" ({counted.skipped} skipped)" if counted.skipped else ""
    return (
        f"run {run.run_id} ({run.trigger}) {outcome} in {run.seconds:.1f}s: "
        f"{counted.steps} steps{skipped}; rows: bronze +{counted.bronze_rows:,}, "
        f"silver +{counted.silver_rows:,}, gold +{counted.gold_rows:,}; "
        f"tests: {counted.tests_passed} passed, {counted.tests_failed} failed"
    )


class RunView(pipeline.RunObserver):
    """What a person sees of a run: on a terminal a live display per step that ends with the
    step, then the step's summary lines; with --verbose a line per page, file and dbt node."""

    def __init__(self, *, summaries: bool = True) -> None:
        self.summaries = summaries  # run-all prints each step's lines; a single step, its own
        self.run: pipeline.RunResult | None = None
        self.results: dict[str, Any] = {}
        self._live: console.StepProgress | None = None

    def __enter__(self) -> RunView:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def run_started(self, run: pipeline.RunResult) -> None:
        self.run = run

    def step_started(self, step: str) -> None:
        self._stop()
        self._live = console.StepProgress(step).__enter__()
        console.detail(f"{step}: started", step=step)

    def extract_progress(self, entity: str, records: int, pages: int, total: int | None) -> None:
        if self._live is not None:
            self._live.update(entity, records, "records", total=total, detail=f"{pages} pages")
        console.detail(
            f"extract {entity}: page {pages}, {records:,} records read"
            + (f" of ~{total:,}" if total is not None else ""),
            step="extract",
        )

    def load_progress(self, table: str, rows: int, files: int, files_total: int) -> None:
        if self._live is not None:
            self._live.update(table, rows, "rows", detail=f"{files}/{files_total} files")
        console.detail(f"load {table}: file {files} of {files_total}, {rows:,} rows", step="load")

    def dbt_node(self, event: gold.NodeEvent) -> None:
        command = "dbt " + event.command.split()[0]
        if self._live is not None:
            self._live.update(
                command,
                event.done,
                "nodes",
                total=event.total,
                detail=f"{event.kind} {event.name} {event.status}",
            )
        timing = f" in {event.seconds:.2f}s" if event.seconds is not None else ""
        console.detail(f"{command}: {event.kind} {event.name} {event.status}{timing}")

    def warn(self, message: str) -> None:
        console.warn(message)

    def step_done(self, step: str, result: Any) -> None:
        self._stop()
        self.results[step] = result
        if self.summaries:
            render_step(step, result)

    def close(self, error: BaseException | None = None) -> Tally | None:
        """End the display; the run's tally line (None when no run started)."""
        self._stop()
        if self.run is None:
            return None
        counted = tally(self.run, self.results)
        console.info(tally_line(self.run, counted, step_of(error) if error else None))
        return counted


DOCTOR_MARKS = {"ok": ("✓", "ok"), "warn": ("!", "warn"), "fail": ("✗", "FAIL"), "skip": ("-", "skip")}


def render_doctor(checks: list[Check]) -> None:
    """A ✓/✗ line per check on a terminal; `ok`/`FAIL` words in logs and pipes (grep-able)."""
    for check in checks:
        symbol, word = DOCTOR_MARKS[check.status]
        mark = symbol if console.interactive() else f"{word:<4}"
        console.say(f"{mark} {check.name}: {check.detail}")


def render_verify(result: VerifyResult, *, as_json: bool) -> None:
    """The days that differ, layer by layer against bronze; the source's count; one verdict.
    With --json, the result is the document when all agree (else the error object's details)."""
    from retailctl.verify_bronze import money

    if as_json:
        if result.ok:
            console.print_json(result.to_dict())
        return
    if result.pruned_files and (result.since is None or result.since < result.complete_since):  # type: ignore[operator]
        console.warn(
            f"{result.pruned_files} loaded sales file(s) were pruned from bronze: days "
            f"before {result.complete_since} can differ for that alone; pass --since "
            f"{result.complete_since}"
        )
    if result.differences:
        console.table(
            "days that differ",
            ("day", "layer", "sales", "lines", "amount", "bronze sales", "bronze lines", "bronze amount"),
            [
                (
                    d.day or "no header",
                    d.layer,
                    d.figures.sales,
                    d.figures.lines,
                    money(d.figures.amount),
                    d.reference.sales,
                    d.reference.lines,
                    money(d.reference.amount),
                )
                for d in result.differences
            ],
        )
    for line in result.missing:
        console.say(f"missing layer: {line}")
    console.say(f"source: {result.source.status}: {result.source.detail}")
    if result.ok:
        console.say(result.summary())
