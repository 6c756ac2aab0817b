"""`run-all`: extract → load → transform → test under one lock, with a history row per run.

Extract and load overlap: load runs on a thread beside extract, taking each chunk of sales as
soon as extract has made it durable (a backfill's load is then mostly done when extract ends).
The run stops at the first failing step with that step's error (and so its exit code); a step
that fails only in part (an entity the source broke the contract for, a file or a line that
could not load) lets the run go on with what did arrive, and the run then fails (exit 1) naming
it. When nothing reached silver since Gold was last built and tested, dbt is skipped: an idle
hour costs an extract and a load that find nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from retailctl import gold
from retailctl.config import Settings
from retailctl.errors import LayersDisagree, RetailctlError, StepFailed, Terminated, mark_step
from retailctl.extract import extract, raise_for_failures
from retailctl.load import Arrivals, LoadResult, load
from retailctl.load import Progress as LoadProgress
from retailctl.store.db import Database
from retailctl.store.lock import pipeline_lock

if TYPE_CHECKING:
    from retailctl.verify import VerifyResult

STEPS = ("extract", "load", "transform", "test")

MARK_STALE_RUNS = """
update meta.pipeline_runs set status = 'interrupted', finished_at = now(),
       error = coalesce(error, 'the process died before the run finished')
where status = 'running'
"""
START_RUN = """
insert into meta.pipeline_runs (run_id, trigger, host, started_at, status, steps)
values (%s, %s, %s, now(), 'running', '[]'::jsonb)
"""
RECORD_STEPS = "update meta.pipeline_runs set steps = %s::jsonb where run_id = %s"
FINISH_RUN = """
update meta.pipeline_runs set status = %s, finished_at = now(), error = %s where run_id = %s
"""
# The change log counts: a load whose only change is a removed line writes no other row.
SILVER_LOADED_AT = """
select greatest(
    (select max(_loaded_at) from silver.customers),
    (select max(_loaded_at) from silver.products),
    (select max(_loaded_at) from silver.sales_customer),
    (select max(_loaded_at) from silver.sales_product),
    (select max(_loaded_at) from silver.sales_changes))
"""
GOLD_STATE = "select step, silver_loaded_at from meta.gold_state"
LAST_PASSING_TEST = "select started_at from meta.gold_state where step = 'test'"
SAVE_GOLD_STATE = """
insert into meta.gold_state (step, silver_loaded_at, started_at, finished_at)
values (%s, %s, %s, now())
on conflict (step) do update
set silver_loaded_at = excluded.silver_loaded_at, started_at = excluded.started_at,
    finished_at = excluded.finished_at
"""

# The snapshot reads only silver.customers: unchanged since the last build, it has nothing to do.
CUSTOMERS_CHANGED = """
select to_regclass('gold.customers_snapshot') is null
    or coalesce((select max(_loaded_at) from silver.customers)
                > (select silver_loaded_at from meta.gold_state where step = 'transform'), true)
"""

GOLD_MODELS = ("dim_customer", "dim_product", "sales_item", "mart_sales_by_customer")
MISSING_MODELS = """
select name from unnest(%s::text[]) as name where to_regclass('gold.' || quote_ident(name)) is null
"""


@dataclass
class StepRecord:
    step: str
    status: str  # success, skipped, failed
    seconds: float
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    run_id: str
    trigger: str
    host: str = field(default_factory=socket.gethostname)
    steps: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class RunObserver:
    """Hears a run as it goes: the command line's live view, the monitor (metrics, pings).

    Every method does nothing here; an observer overrides what it needs. Progress arrives
    from the steps' own threads as well as the main one.
    """

    def run_started(self, run: RunResult) -> None:
        """The lock is held and the run's history row written."""

    def step_started(self, step: str) -> None:
        pass

    def extract_progress(self, entity: str, records: int, pages: int, total: int | None) -> None:
        pass

    def load_progress(self, table: str, rows: int, files: int, files_total: int) -> None:
        pass

    def dbt_node(self, event: gold.NodeEvent) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def step_done(self, step: str, result: Any) -> None:
        """A step finished; `result` is its result object, None when it was skipped."""

    def run_ended(self, run: RunResult, conn: psycopg.Connection) -> None:
        """The run is over, success or not, its history row final; the lock is still held
        and `conn` (autocommit) still open: the moment to read figures of the database."""


class Observers(RunObserver):
    """Several observers heard as one, in order."""

    def __init__(self, *observers: RunObserver) -> None:
        self.observers = observers

    def run_started(self, run: RunResult) -> None:
        for observer in self.observers:
            observer.run_started(run)

    def step_started(self, step: str) -> None:
        for observer in self.observers:
            observer.step_started(step)

    def extract_progress(self, entity: str, records: int, pages: int, total: int | None) -> None:
        for observer in self.observers:
            observer.extract_progress(entity, records, pages, total)

    def load_progress(self, table: str, rows: int, files: int, files_total: int) -> None:
        for observer in self.observers:
            observer.load_progress(table, rows, files, files_total)

    def dbt_node(self, event: gold.NodeEvent) -> None:
        for observer in self.observers:
            observer.dbt_node(event)

    def warn(self, message: str) -> None:
        for observer in self.observers:
            observer.warn(message)

    def step_done(self, step: str, result: Any) -> None:
        for observer in self.observers:
            observer.step_done(step, result)

    def run_ended(self, run: RunResult, conn: psycopg.Connection) -> None:
        for observer in self.observers:
            observer.run_ended(run, conn)


class _LoadBeside:
    """`load` on a thread, following an extract in progress (see load.Arrivals), started by
    the first file extract commits (a changed snapshot, a chunk of 8 pages of sales): a run
    whose extract commits nothing before it ends (an idle run, most hourly ones) loads after
    it, in the run's thread, as without this."""

    def __init__(self, database: Database, bronze: str, progress: LoadProgress) -> None:
        self.database, self.bronze, self.progress = database, bronze, progress
        self.arrivals = Arrivals()
        self._thread: threading.Thread | None = None
        self._result: LoadResult | None = None
        self._error: BaseException | None = None

    def committed(self) -> None:
        """Extract made a chunk durable: load it, on the thread (started now if need be)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="load")
            self._thread.start()
        self.arrivals.committed()

    def _load(self) -> None:
        try:
            self._result = load(self.database, self.bronze, progress=self.progress, arrivals=self.arrivals)
        except BaseException as exc:  # raised in the run's thread, by finish()
            self._error = exc

    def finish(self) -> LoadResult:
        """Extract is over: the load's last pass, its result (or its error, raised here)."""
        if self._thread is None:
            return load(self.database, self.bronze, progress=self.progress)
        self.arrivals.end()
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        """The run failed or was interrupted: the load ends after its current file."""
        self.arrivals.stop()
        if self._thread is not None:
            self._thread.join()


class _History:
    """The run's row in meta.pipeline_runs, kept current after every step."""

    def __init__(self, conn: psycopg.Connection, run: RunResult, observer: RunObserver) -> None:
        self.conn = conn
        self.run = run
        self.observer = observer
        self.current = STEPS[0]
        self.clock = time.monotonic()
        conn.execute(MARK_STALE_RUNS)  # we hold the lock: any 'running' row is a dead run
        conn.execute(START_RUN, (run.run_id, run.trigger, run.host))

    def begin(self, step: str) -> None:
        self.current, self.clock = step, time.monotonic()
        self.observer.step_started(step)

    def elapsed(self) -> float:
        return time.monotonic() - self.clock

    def record(self, step: StepRecord) -> None:
        self.run.steps.append(step)
        steps = orjson.dumps([vars(s) for s in self.run.steps]).decode()
        self.conn.execute(RECORD_STEPS, (steps, self.run.run_id))

    def finish(self, status: str, error: str | None = None) -> None:
        self.conn.execute(FINISH_RUN, (status, error, self.run.run_id))


def silver_loaded_at(conn: psycopg.Connection) -> datetime | None:
    row = conn.execute(SILVER_LOADED_AT).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def tracked_run(
    settings: Settings, database: Database, label: str, observer: RunObserver | None = None
) -> Iterator[_History]:
    """Hold the pipeline lock and keep this run's history row for the block; a failure is
    recorded (redacted) against the step in progress, marked with that step and re-raised."""
    observer = observer or RunObserver()
    run = RunResult(run_id=str(uuid.uuid4()), trigger=settings.trigger)
    run.host = settings.host or run.host
    started = time.monotonic()
    with pipeline_lock(database, label) as lock_conn:
        history = _History(lock_conn, run, observer)
        observer.run_started(run)
        try:
            yield history
        except BaseException as exc:
            mark_step(exc, history.current)
            if isinstance(exc, Terminated):
                history.finish("interrupted", "stopped by SIGTERM")
            elif isinstance(exc, KeyboardInterrupt):
                history.finish("interrupted", "interrupted")
            elif isinstance(exc, Exception):
                if history.current not in {step.step for step in run.steps}:
                    history.record(StepRecord(history.current, "failed", history.elapsed()))
                history.finish("failed", settings.redact(str(exc)))
            run.seconds = time.monotonic() - started
            observer.run_ended(run, lock_conn)
            raise
        history.finish("success")
        run.seconds = time.monotonic() - started
        observer.run_ended(run, lock_conn)


@contextlib.contextmanager
def single_step(
    settings: Settings, database: Database, step: str, observer: RunObserver | None = None
) -> Iterator[None]:
    """One step run on its own (`retailctl load`, an Airflow task): locked, and in the history."""
    with tracked_run(settings, database, step, observer) as history:
        history.begin(step)
        yield
        history.record(StepRecord(step, "success", history.elapsed()))


def run_all(settings: Settings, database: Database, *, observer: RunObserver | None = None) -> RunResult:
    """Run every step once under the pipeline lock; raises the first step's error."""
    observer = observer or RunObserver()
    with tracked_run(settings, database, "run-all", observer) as history:
        _steps(settings, database, history.conn, history, observer)
    return history.run


def run_tests(
    settings: Settings,
    database: Database,
    conn: psycopg.Connection,
    *,
    changed: bool,
    on_node: gold.OnNode | None = None,
) -> list[gold.DbtResult]:
    """dbt tests: every row, or (`changed`) the rows written since the last passing test run
    started. A passing run is remembered, with the silver state it saw."""
    missing = [name for (name,) in conn.execute(MISSING_MODELS, (list(GOLD_MODELS),))]
    if missing:  # dbt would fail every test of a missing model, in hundreds of lines
        raise StepFailed(
            f"Gold is not built yet (no gold.{missing[0]}): run `retailctl transform` "
            "first, or `retailctl run-all`"
        )
    row = conn.execute(LAST_PASSING_TEST).fetchone() if changed else None
    since = row[0] if row else None
    started = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
    newest = silver_loaded_at(conn)
    results = gold.test(settings, database.url, checked_since=since, on_node=on_node)
    if not gold.failure_lines(results):
        conn.execute(SAVE_GOLD_STATE, ("test", newest, started))
    return results


@dataclass
class GoldChecks:
    """`retailctl test`: the dbt tests, and for the full test verify's day-by-day proof that
    bronze, silver, the fact and the mart agree (None for `--changed`)."""

    dbt: list[gold.DbtResult]
    verified: VerifyResult | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"commands": [r.to_dict() for r in self.dbt]}
        if self.verified is not None:
            document["verify"] = self.verified.to_dict()
        return document

    def raise_for_failures(self) -> None:
        """Exit 3 on a failing dbt test or a day the layers differ on, naming both; when
        the layers differ, the --json error object's details hold the whole report."""
        lines = gold.failure_lines(self.dbt)
        problems = [f"{len(lines)} dbt test(s) failed: " + "; ".join(lines)] if lines else []
        if self.verified is not None and not self.verified.ok:
            problems.append(f"verify: {self.verified.summary()}")
            raise LayersDisagree("; ".join(problems), details=self.to_dict())
        gold.raise_for_failures(self.dbt)


def check_gold(
    settings: Settings,
    database: Database,
    conn: psycopg.Connection,
    *,
    changed: bool,
    on_node: gold.OnNode | None = None,
) -> GoldChecks:
    """`retailctl test`: the dbt tests (see run_tests); the full test (not `changed`) then
    verifies every day bronze still holds whole, even when a dbt test failed, so one run
    names every problem. `--changed` (run-all's hourly test) skips verify: it reads all of
    bronze."""
    results = run_tests(settings, database, conn, changed=changed, on_node=on_node)
    if changed:
        return GoldChecks(results)
    from retailctl import verify  # the bronze scan's imports, only for the full test

    return GoldChecks(results, verify.verify_whole_bronze(database, settings))


def _steps(
    settings: Settings, database: Database, conn: psycopg.Connection, history: _History, observer: RunObserver
) -> None:
    partial, loaded = _extract_and_load(settings, database, history, observer)
    fresh = all(
        loaded.tables[table].inserted + loaded.tables[table].updated for table in gold.FRESHNESS_CHECKED
    )
    _gold(settings, database, conn, history, observer, sources_fresh=fresh)
    if partial:
        error = StepFailed("; ".join(f"{step}: {problem}" for step, problem in partial))
        mark_step(error, partial[0][0])
        raise error


def _extract_and_load(
    settings: Settings, database: Database, history: _History, observer: RunObserver
) -> tuple[list[tuple[str, str]], LoadResult]:
    """Extract, with load following it on a thread (`_LoadBeside`), recorded as two steps;
    returns the steps that failed in part (the run goes on with what arrived, then fails) and
    what load did."""
    on_step = observer.step_done
    partial: list[tuple[str, str]] = []
    history.begin("extract")
    beside = _LoadBeside(database, settings.bronze_location, observer.load_progress)
    try:
        # dbt will run once load writes silver: import it meanwhile, from the moment extract
        # knows new sales are coming (or after extract, when only a snapshot or a correction
        # changed)
        extracted = extract(
            settings,
            database,
            progress=observer.extract_progress,
            warn=observer.warn,
            new_sales=gold.preload,
            committed=beside.committed,
        )
        failed = [e for e in extracted if e.error]
        history.record(
            StepRecord(
                "extract",
                "failed" if failed else "success",
                history.elapsed(),
                {
                    e.entity: {"records": e.records, "rejected": e.rejected, "inconsistent": e.inconsistent}
                    for e in extracted
                },
            )
        )
        on_step("extract", extracted)
        if any(e.files for e in extracted):
            gold.preload()
        try:
            raise_for_failures(extracted)
        except RetailctlError as exc:
            partial.append(("extract", str(exc)))

        history.begin("load")  # its seconds: what was left to load once extract had ended
        loaded = beside.finish()
    finally:
        beside.stop()  # nothing left to stop once finished; after an error, ends the load
    failure = loaded.failure()
    history.record(
        StepRecord(
            "load",
            "failed" if failure else "success",
            history.elapsed(),
            {
                t.table: {"inserted": t.inserted, "updated": t.updated, "quarantined": t.quarantined}
                for t in loaded.tables.values()
            },
        )
    )
    on_step("load", loaded)
    if failure:
        partial.append(("load", f"{failure}: {[*loaded.errors, *loaded.quarantined][0]}"))
    return partial, loaded


def _gold(
    settings: Settings,
    database: Database,
    conn: psycopg.Connection,
    history: _History,
    observer: RunObserver,
    *,
    sources_fresh: bool,
) -> None:
    """Transform and test, unless nothing reached silver since Gold was built and tested: in
    one dbt invocation (`gold.build`), recorded as the two steps it holds. The snapshot is left
    out when no customer changed since the last build, source freshness when this run's load
    wrote to every table it checks (`sources_fresh`, see gold.after_build)."""
    on_step = observer.step_done
    newest = silver_loaded_at(conn)
    built = dict(conn.execute(GOLD_STATE).fetchall())
    if newest is not None and built.get("transform") == newest and built.get("test") == newest:
        for step in ("transform", "test"):
            history.record(StepRecord(step, "skipped", 0.0, {"reason": "nothing new in silver"}))
            on_step(step, None)
        return

    history.begin("transform")
    row = conn.execute(LAST_PASSING_TEST).fetchone()
    since = row[0] if row else None
    snapshot = bool(conn.execute(CUSTOMERS_CHANGED).fetchone()[0])  # type: ignore[index]
    build = gold.build(
        settings,
        database.url,
        checked_since=since,
        snapshot=snapshot,
        on_node=observer.dbt_node,
    )
    if all(node.status == "success" for node in build.transform.nodes):  # none skipped
        conn.execute(SAVE_GOLD_STATE, ("transform", newest, None))
    history.record(
        StepRecord(
            "transform",
            "success",
            history.elapsed() - build.test.seconds,  # dbt's import included
            {node.name: node.rows_affected for node in build.transform.nodes},
        )
    )
    on_step("transform", [build.transform])
    # every row the build wrote was written before now and tested by it: the next hour's tests
    # start here, if these pass
    tested_until = conn.execute("select now()").fetchone()[0]  # type: ignore[index]

    history.begin("test")
    after = gold.after_build(
        settings, database.url, checked_since=since, freshness=not sources_fresh, on_node=observer.dbt_node
    )
    tested = [build.test, *after]
    failures = gold.failure_lines(tested)
    if not failures:
        conn.execute(SAVE_GOLD_STATE, ("test", newest, tested_until))
    seconds = sum(result.seconds for result in tested)
    history.record(StepRecord("test", "failed" if failures else "success", seconds, {"failed": failures}))
    on_step("test", tested)
    gold.raise_for_failures(tested)
