"""`transform`, `test`, `docs`: the Gold dbt project, run in-process through dbtRunner.

dbt gets its connection from environment variables that a profile written by retailctl names
with `env_var()`; the password travels as DBT_ENV_SECRET_… so dbt scrubs it from its logs, and
is never written to disk. dbt's target/ and logs/ live under the data dir, never inside the
installed package, which may be read-only; like everything under the data dir they are private
(dbt runs under umask 077: compiled SQL and run results hold customer data).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

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
# dbt invocations per --select: the snapshot, then models by tag (one `dbt run` for core and
# mart together keeps their order from the DAG and saves an invocation's start-up).
SELECTIONS = {
    "core": ("snapshot", "tag:core"),
    "mart": ("tag:mart",),
    "all": ("snapshot", "tag:core tag:mart"),
}
FAILING_STATUSES = {"error", "fail", "runtime error"}


@dataclass
class NodeResult:
    name: str
    kind: str  # model, snapshot, test, unit_test, source
    status: str
    seconds: float
    rows_affected: int | None = None
    failures: int | None = None
    message: str | None = None


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
        return asdict(self)


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


def invoke(
    settings: Settings, database_url: str, args: Sequence[str], on_node: OnNode | None = None
) -> DbtResult:
    """One dbt command, in this process, with a fresh runner; never two at once. `on_node`
    hears each node start and finish as dbt runs it."""
    from dbt.cli.main import dbtRunner  # imported late: dbt takes a second to import

    paths = DbtPaths.for_settings(settings)
    started = time.monotonic()
    callbacks = [_NodeEvents(" ".join(args), on_node)] if on_node else []
    with _private(paths), _environment(dbt_environment(database_url)):
        paths.write_profile()
        # retailctl renders results itself; dbt's own log goes to its file under the data dir
        outcome = dbtRunner(callbacks=callbacks).invoke(
            [*args, *paths.flags(), "--log-level", "none", "--log-level-file", "debug", "--no-use-colors"]
        )
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
    )


def transform(
    settings: Settings,
    database_url: str,
    select: str = "all",
    full_refresh: bool = False,
    on_node: OnNode | None = None,
) -> list[DbtResult]:
    """The snapshot, then core (dims and the fact), then the mart; stops at a failure.

    `full_refresh` rebuilds the incremental models from silver (after a change of shape).
    """
    results = []
    for part in SELECTIONS[select]:
        args = ["snapshot"] if part == "snapshot" else ["run", "--select", *part.split()]
        if full_refresh and part != "snapshot":
            args.append("--full-refresh")
        result = invoke(settings, database_url, args, on_node)
        results.append(result)
        if not result.success:
            names = ", ".join(f"{node.name} ({node.message})" for node in result.failed)
            raise StepFailed(settings.redact(f"dbt {result.command} failed: {names or 'see logs'}"))
    return results


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
    args = ["test"]
    if checked_since is not None:
        args += [
            "--vars",
            json.dumps({"checked_since": checked_since.isoformat()}),
            "--exclude",
            "test_type:unit",
        ]
    return [
        invoke(settings, database_url, args, on_node),
        invoke(settings, database_url, ["source", "freshness"], on_node),
    ]


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
