"""`transform`, `test`, `docs`: the Gold dbt project, run in-process through dbtRunner.

dbt gets its connection from environment variables that a profile written by retailctl names
with `env_var()`; the password travels as DBT_ENV_SECRET_… so dbt scrubs it from its logs, and
is never written to disk. dbt's target/ and logs/ live under the data dir, never inside the
installed package, which may be read-only; like everything under the data dir they are private
(dbt runs under umask 077: compiled SQL and run results hold customer data).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from retailctl import dbt_patches
from retailctl.bronze_files import DIR_MODE, FILE_MODE, ensure_private_dir
from retailctl.config import Settings
from retailctl.errors import DataTestsFailed, StepFailed, Terminated
from retailctl.resources import resource_dir

PROFILE = """\
# Written by retailctl: connection details come from the environment (see README).
retailctl:
  target: default
  outputs:
    default:
      type: postgres
      host: "{{ env_var('RETAIL_DBT_HOST') }}"
      port: "{{ env_var('RETAIL_DBT_PORT') | as_number }}"
      user: "{{ env_var('RETAIL_DBT_USER') }}"
      password: "{{ env_var('DBT_ENV_SECRET_RETAIL_DB_PASSWORD', '') }}"
      dbname: "{{ env_var('RETAIL_DBT_DBNAME') }}"
      sslmode: "{{ env_var('RETAIL_DBT_SSLMODE', 'prefer') }}"
      schema: gold
      threads: 2
      connect_timeout: 10
"""
# What `transform --select` builds, in one `dbt build` of snapshots and models (tests left to
# `test`), in DAG order: the snapshot and the models share no edge (the dimensions read silver),
# so dbt runs them side by side. One invocation pays dbt's start-up and reads the parsed
# project once: 0.4 s less than a `dbt snapshot` then a `dbt run` (docs/scale.md).
SELECTIONS = {
    "core": ("resource_type:snapshot", "tag:core"),
    "mart": ("tag:mart",),
    "all": ("resource_type:snapshot", "tag:core", "tag:mart"),
}
TRANSFORM_RESOURCES = ["--resource-type", "snapshot", "--resource-type", "model"]
FAILING_STATUSES = {"error", "fail", "runtime error"}
# Passed to every invocation: retailctl renders results itself; dbt's own log goes to its file
# under the data dir.
RUNNER_FLAGS = ["--log-level", "none", "--log-level-file", "debug", "--no-use-colors"]
# run-all's hourly invocations also leave out target/manifest.json and run_results.json, which
# nothing of retailctl reads (run-all keeps its own results): writing them cost more than a
# test node. `transform`, `test` and `docs` on their own still write them.
HOURLY_FLAGS = ["--no-write-json"]
# The start of the last passing test run, for tests of the incremental models (see
# macros/get_where_subquery.sql). An environment variable read only when a test executes, not
# a --vars: dbt re-parses the whole project whenever its command-line vars change.
CHECKED_SINCE = "RETAIL_DBT_CHECKED_SINCE"
BUILT_KINDS = {"model", "snapshot"}  # the rest of a `dbt build`: data and unit tests
# The silver tables models/sources.yml gives a freshness rule (tests/test_gold.py keeps the two
# in step). A run whose load just wrote rows into each of them knows `source freshness` passes:
# their newest _loaded_at is this run's (see after_build).
FRESHNESS_CHECKED = ("sales_customer", "sales_product")


@dataclass
class NodeResult:
    name: str
    kind: str  # model, snapshot, test, unit_test, source
    status: str
    seconds: float
    rows_affected: int | None = None
    failures: int | None = None
    message: str | None = None
    finished_at: datetime | None = None  # UTC, naive as dbt keeps it; not in to_dict()


@dataclass
class DbtResult:
    command: str
    success: bool
    seconds: float
    nodes: list[NodeResult] = field(default_factory=list)

    @property
    def failed(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.status in FAILING_STATUSES]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for node in out["nodes"]:
            del node["finished_at"]
        return out


@dataclass(frozen=True)
class NodeEvent:
    """A dbt node started (status "started") or finished, for live progress: `done` of
    `total` nodes of the command have finished."""

    command: str
    name: str
    kind: str
    status: str
    done: int
    total: int | None
    seconds: float | None = None


OnNode = Callable[[NodeEvent], None]


class _NodeEvents:
    """A dbtRunner callback: dbt's event messages in, NodeEvents out (from dbt's threads)."""

    def __init__(self, command: str, on_node: OnNode) -> None:
        self.command = command
        self.on_node = on_node
        self.total: int | None = None
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        name = msg.info.name
        if name == "ConcurrencyLine":
            self.total = int(msg.data.node_count)
        elif name in ("LogStartLine", "NodeFinished"):
            info = msg.data.node_info
            finished = name == "NodeFinished"
            with self._lock:
                self.done += finished
                event = NodeEvent(
                    command=self.command,
                    name=info.node_name,
                    kind=info.resource_type,
                    status=info.node_status if finished else "started",
                    done=self.done,
                    total=self.total,
                    seconds=float(msg.data.run_result.execution_time) if finished else None,
                )
            self.on_node(event)


def dbt_environment(database_url: str) -> dict[str, str]:
    """The variables the written profile reads, from any connection string libpq accepts
    (URL or key=value; a socket directory works as the host)."""
    params = conninfo_to_dict(database_url)
    return {
        "RETAIL_DBT_HOST": str(params.get("host") or "localhost"),
        "RETAIL_DBT_PORT": str(params.get("port") or 5432),
        "RETAIL_DBT_USER": str(params.get("user") or "postgres"),
        "RETAIL_DBT_DBNAME": str(params.get("dbname") or "postgres"),
        "RETAIL_DBT_SSLMODE": str(params.get("sslmode") or "prefer"),
        "DBT_ENV_SECRET_RETAIL_DB_PASSWORD": str(params.get("password") or ""),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",  # no network here, and no telemetry
        # small incremental queries: JIT compilation would cost more than it saves
        "PGOPTIONS": "-c jit=off",
    }


@dataclass(frozen=True)
class DbtPaths:
    project: Path
    profiles: Path
    target: Path
    logs: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> DbtPaths:
        state = settings.data_dir / "dbt"
        return cls(resource_dir("dbt"), state / "profiles", state / "target", state / "logs")

    def write_profile(self) -> None:
        ensure_private_dir(self.profiles)
        profile = self.profiles / "profiles.yml"
        if not profile.exists() or profile.read_text() != PROFILE:
            profile.write_text(PROFILE)
        profile.chmod(FILE_MODE)

    def flags(self) -> list[str]:
        return [
            "--project-dir",
            str(self.project),
            "--profiles-dir",
            str(self.profiles),
            "--target-path",
            str(self.target),
            "--log-path",
            str(self.logs),
        ]


@contextlib.contextmanager
def _private(paths: DbtPaths) -> Iterator[None]:
    """Files dbt (and we) write under the data dir: 0600 in 0700 directories."""
    previous = os.umask(0o077)
    try:
        for directory in (paths.profiles, paths.target, paths.logs):
            ensure_private_dir(directory)
            directory.chmod(DIR_MODE)  # made by an older version: 0755
        yield
    finally:
        os.umask(previous)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def preload() -> None:
    """Start importing dbt on a thread (it takes a second or more) while the caller still has
    work that mostly waits on the network or the database: the first `invoke` then finds dbt
    imported, or waits for the import to end. Only for a run that will call dbt: an idle run
    never imports it. Called again, it does nothing."""
    global _preloading
    with _preload_lock:
        if _preloading:
            return
        _preloading = True

    def load() -> None:
        with contextlib.suppress(Exception):  # `invoke` imports again and raises it there
            _import_dbt()

    threading.Thread(target=load, name="dbt-import", daemon=True).start()


_preload_lock = threading.Lock()
_preloading = False


def _import_dbt() -> None:
    """Import dbt with the cyclic garbage collector paused, then freeze what the import built.

    The import makes hundreds of thousands of objects that live as long as the process: the
    full collections it triggered walked all of them, and every later one did again (~0.3 s of
    an hourly run's garbage collection, 4 passes). Frozen, later collections skip them. Another
    thread importing dbt meanwhile (the preload) is waited for by Python's import lock."""
    if "dbt.cli.main" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module("dbt.cli.main")
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def invoke(
    settings: Settings,
    database_url: str,
    args: Sequence[str],
    on_node: OnNode | None = None,
    env: dict[str, str] | None = None,
) -> DbtResult:
    """One dbt command, in this process, with a fresh runner; never two at once. `on_node`
    hears each node start and finish as dbt runs it; `env` is set for the invocation only."""
    _import_dbt()  # late: dbt takes a second to import
    from dbt.cli.main import dbtRunner

    dbt_patches.apply()
    paths = DbtPaths.for_settings(settings)
    started = time.monotonic()
    callbacks = [_NodeEvents(" ".join(args), on_node)] if on_node else []
    with _private(paths), _environment({**dbt_environment(database_url), **(env or {})}):
        paths.write_profile()
        outcome = dbtRunner(callbacks=callbacks).invoke([*args, *paths.flags(), *RUNNER_FLAGS])
    result = DbtResult(command=" ".join(args), success=outcome.success, seconds=time.monotonic() - started)
    if isinstance(outcome.exception, Terminated | KeyboardInterrupt):
        raise outcome.exception  # a stop signal dbt caught: let it reach the CLI (143 / 130)
    if outcome.exception is not None:
        raise StepFailed(settings.redact(f"dbt {result.command} failed: {_one_line(outcome.exception)}"))
    for node_result in getattr(outcome.result, "results", None) or []:
        result.nodes.append(_node(node_result))
    return result


def _one_line(exc: BaseException) -> str:
    """dbt's error text without its SQL excerpt and caret line: one line for a log."""
    lines = [line.strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("LINE ", "^"))]
    return " ".join(lines)


def _node(node_result: Any) -> NodeResult:
    node = node_result.node
    response = getattr(node_result, "adapter_response", None) or {}
    return NodeResult(
        name=getattr(node, "name", str(node)),
        kind=str(getattr(node, "resource_type", "source")),
        status=str(node_result.status),
        seconds=float(getattr(node_result, "execution_time", 0.0) or 0.0),
        rows_affected=response.get("rows_affected") if isinstance(response, dict) else None,
        failures=getattr(node_result, "failures", None),
        message=getattr(node_result, "message", None),
        finished_at=max((t.completed_at for t in node_result.timing if t.completed_at), default=None),
    )


def transform(
    settings: Settings,
    database_url: str,
    select: str = "all",
    full_refresh: bool = False,
    on_node: OnNode | None = None,
) -> list[DbtResult]:
    """The snapshot, core (dims and the fact) and the mart, in DAG order: what depends on a
    failed node is skipped, and a failure raises StepFailed once the rest has run.

    `full_refresh` rebuilds the incremental models from silver (after a change of shape); a
    snapshot keeps its history whatever the flag says.
    """
    args = ["build", "--select", *SELECTIONS[select], *TRANSFORM_RESOURCES]
    if full_refresh:
        args.append("--full-refresh")
    result = invoke(settings, database_url, args, on_node)
    if not result.success:
        names = ", ".join(f"{node.name} ({node.message})" for node in result.failed)
        raise StepFailed(settings.redact(f"dbt {result.command} failed: {names or 'see logs'}"))
    return [result]


def test(
    settings: Settings,
    database_url: str,
    checked_since: datetime | None = None,
    on_node: OnNode | None = None,
) -> list[DbtResult]:
    """dbt data and unit tests, then source freshness (see `raise_for_failures`).

    With `checked_since`, the fact's and the mart's tests check only the rows written since:
    an hourly test then costs in proportion to the new data. The unit tests check the models'
    logic, not the data, so they run with the full tests only.
    """
    args = ["test"] if checked_since is None else ["test", "--exclude", "test_type:unit"]
    return [
        invoke(settings, database_url, args, on_node, env=_checked_since(checked_since)),
        invoke(settings, database_url, ["source", "freshness"], on_node),
    ]


def _checked_since(since: datetime | None) -> dict[str, str]:
    return {CHECKED_SINCE: since.isoformat() if since is not None else ""}


@dataclass
class Build:
    """An hourly Gold build, split the way run-all reports it: `transform` holds the snapshot
    and the models, `test` their tests. The build's wall time is split at the moment its last
    model finished (tests of the dimensions can run before the fact is built)."""

    transform: DbtResult
    test: DbtResult


def build(
    settings: Settings,
    database_url: str,
    *,
    checked_since: datetime | None,
    snapshot: bool = True,
    on_node: OnNode | None = None,
) -> Build:
    """The snapshot, the models and their data tests in one `dbt build` (DAG order: what
    depends on a failed model or test is skipped); a failed snapshot or model raises
    StepFailed, failed tests are for `raise_for_failures` once `after_build` has run.

    One invocation instead of a snapshot, a run and a test: dbt's start-up is paid once.
    `checked_since` as for `test`; `snapshot=False` leaves the customer snapshot out (no
    customer changed since it last ran).
    """
    exclude = ["test_type:unit"] if snapshot else ["test_type:unit", "resource_type:snapshot"]
    args = ["build", "--exclude", *exclude, *HOURLY_FLAGS]
    started = datetime.now(UTC).replace(tzinfo=None)
    built = invoke(settings, database_url, args, on_node, env=_checked_since(checked_since))
    models = [node for node in built.nodes if node.kind in BUILT_KINDS]
    tests = [node for node in built.nodes if node.kind not in BUILT_KINDS]
    failed = [node for node in models if node.status in FAILING_STATUSES]
    if failed or (not built.nodes and not built.success):
        names = ", ".join(f"{node.name} ({node.message})" for node in failed)
        raise StepFailed(settings.redact(f"dbt {built.command} failed: {names or 'see logs'}"))
    done = max((node.finished_at for node in models if node.finished_at), default=None)
    building = min(max((done - started).total_seconds(), 0.0), built.seconds) if done else 0.0
    return Build(
        transform=DbtResult(built.command, True, building, models),
        test=DbtResult(built.command, not tests or built.success, built.seconds - building, tests),
    )


def after_build(
    settings: Settings,
    database_url: str,
    *,
    checked_since: datetime | None,
    freshness: bool = True,
    on_node: OnNode | None = None,
) -> list[DbtResult]:
    """What `test` runs that a `build` leaves out: the unit tests when every row is checked
    (`checked_since` None; in a build they would run before the incremental models they read
    exist), then source freshness, unless `freshness` is False: the run just loaded rows into
    every FRESHNESS_CHECKED table, so dbt would find them minutes old at most (an invocation
    of its own, 0.2-0.5 s, to learn that). A run that loaded none of them checks, as does
    `retailctl test`; staleness between builds is watched by the metrics and `status`."""
    results = []
    if checked_since is None:
        unit = ["test", "--select", "test_type:unit", *HOURLY_FLAGS]
        results.append(invoke(settings, database_url, unit, on_node))
    if freshness:
        results.append(invoke(settings, database_url, ["source", "freshness", *HOURLY_FLAGS], on_node))
    return results


def failure_lines(results: Sequence[DbtResult]) -> list[str]:
    """One line per failing test: its name and failing row count (a unit test: that its rows
    differ; dbt's log shows the diff)."""
    return [_failure_line(node) for result in results for node in result.failed]


def _failure_line(node: NodeResult) -> str:
    if node.kind == "unit_test" and node.status == "fail":
        return f"{node.name}: unit test output differs from its expected rows"
    if node.failures is not None:
        return f"{node.name}: {node.failures} failing row(s)"
    return f"{node.name}: {node.status} ({node.message})"


def raise_for_failures(results: Sequence[DbtResult]) -> None:
    lines = failure_lines(results)
    if lines:
        raise DataTestsFailed(f"{len(lines)} dbt test(s) failed: " + "; ".join(lines))


def parse(settings: Settings, database_url: str) -> DbtResult:
    """`dbt parse`: the project and its profile are valid (`doctor`); writes only under the
    data dir (target/, logs/)."""
    return invoke(settings, database_url, ["parse"])


def deps(settings: Settings, database_url: str) -> DbtResult | None:
    """`dbt deps`, only when the project has a packages.yml (none by default: no network needed)."""
    if not (DbtPaths.for_settings(settings).project / "packages.yml").exists():
        return None
    result = invoke(settings, database_url, ["deps"])
    if not result.success:
        raise StepFailed("dbt deps failed: see the dbt log under the data dir")
    return result


def docs(settings: Settings, database_url: str) -> DbtResult:
    """`dbt docs generate` into the data dir's target/ (a failure raises StepFailed); served
    by `docs_server`, not `dbt docs serve`."""
    result = invoke(settings, database_url, ["docs", "generate"])
    if not result.success:
        raise StepFailed(
            "dbt docs generate failed: see the dbt log under the data dir "
            f"({DbtPaths.for_settings(settings).logs})"
        )
    return result
