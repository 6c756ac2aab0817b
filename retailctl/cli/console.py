"""Output: rich on a terminal, plain lines in cron logs and pipes, JSON for machines.

Four kinds of line, so that `--quiet`, `--verbose`, `--json` and RETAIL_LOG_FORMAT=json each
know what to do with them:

- `say`: the answer the command was asked for (status, config, state); always printed.
- `info` (stdout) and `notice` (stderr): what a run is doing; dropped by `--quiet`.
- `detail`: more of it (pages, files, dbt nodes, setting sources); only with `--verbose`.
- `warn` and `error`: never dropped.

With RETAIL_LOG_FORMAT=json every line that is not the command's answer is one JSON object on
stderr (`{"ts", "level", "message", ...}`); with `--json` stdout holds one JSON document only.

A reader that goes away (`retailctl status | head -5`, `| grep -q`) silences the stream for the
rest of the command instead of failing it: the work finishes and the exit code is the work's.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

QUIET, NORMAL, VERBOSE = -1, 0, 1


@dataclass
class Mode:
    verbosity: int = NORMAL
    log_json: bool = False  # RETAIL_LOG_FORMAT=json
    stdout_json: bool = False  # the command was given --json: stdout is its document only


MODE = Mode()


def configure(
    *, verbosity: int | None = None, log_format: str | None = None, stdout_json: bool | None = None
) -> None:
    if verbosity is not None:
        MODE.verbosity = verbosity
    if log_format is not None:
        MODE.log_json = log_format == "json"
    if stdout_json is not None:
        MODE.stdout_json = stdout_json


def interactive() -> bool:
    """A person is watching: show progress bars and tables, not log lines."""
    return stdout.is_terminal


def write(stream: TextIO, text: str) -> None:
    """Write and flush; a closed pipe silences the stream (see the module docstring)."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        silence(stream)


def silence(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null: what is still buffered, and every later
    write (the interpreter's last flush included), goes nowhere instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def live() -> bool:
    """Draw live progress: on a terminal, and not when lines are for a machine or muted."""
    return interactive() and not MODE.log_json and MODE.verbosity > QUIET


def say(message: str) -> None:
    """The command's answer: cron logs and pipes get it byte for byte (no wrapping)."""
    if MODE.stdout_json:
        _log("info", message, {})
        return
    write(sys.stdout, f"{message}\n")


def info(message: str, **fields: Any) -> None:
    """A line of what a run did (a step's summary): stdout, as the run's own log."""
    if MODE.verbosity <= QUIET:
        return
    if MODE.log_json or MODE.stdout_json:
        _log("info", message, fields)
        return
    write(sys.stdout, f"{message}\n")


def notice(message: str, **fields: Any) -> None:
    """Something worth knowing that is not the command's answer (demo mode, a server's URL)."""
    if MODE.verbosity > QUIET:
        _log("info", message, fields)


def detail(message: str, **fields: Any) -> None:
    """With --verbose only: pages, files, dbt nodes, where each setting came from."""
    if MODE.verbosity >= VERBOSE:
        _log("debug", message, fields)


def warn(message: str, **fields: Any) -> None:
    _log("warning", message, fields)


def error(message: str, *, detail: str = "", **fields: Any) -> None:
    """An error line; `detail` (a traceback) goes before it, or in its JSON object."""
    if detail and not MODE.log_json:
        write(sys.stderr, f"{detail}\n")
    _log("error", message, {**fields, "detail": detail} if detail else fields)


PREFIXES = {"warning": "warning: ", "error": "error: ", "debug": "", "info": ""}


def _log(level: str, message: str, fields: dict[str, Any]) -> None:
    if MODE.log_json:
        line = json_line(
            {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "level": level,
                "message": message,
                **fields,
            }
        )
    else:
        line = PREFIXES[level] + message
    write(sys.stderr, f"{line}\n")


def _json_default(value: Any) -> Any:
    """Numbers as numbers, durations as seconds, paths as text (orjson does datetimes itself)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path | date):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_line(document: Any) -> str:
    return orjson.dumps(document, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def print_json(document: Any) -> None:
    write(
        sys.stdout,
        orjson.dumps(
            document, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        ).decode()
        + "\n",
    )


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; tab-separated lines with a header otherwise."""
    if interactive() and not MODE.stdout_json:
        rendered = Table(title=title, title_justify="left")
        for column in columns:
            rendered.add_column(column)
        for row in rows:
            rendered.add_row(*(str(cell) for cell in row))
        stdout.print(rendered)
        return
    say(title)
    say("\t".join(columns))
    for row in rows:
        say("\t".join(str(cell) for cell in row))


class StepProgress:
    """One step's live display on a terminal: a line per entity, table or dbt command, with
    its count, rate and, when the total is known, a bar and an estimate. Silent otherwise."""

    def __init__(self, title: str = "") -> None:
        self.title = title
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._last_update = time.monotonic()  # a new line's clock starts where the last left off
        self._lock = threading.Lock()  # dbt reports from its worker threads, run-all's load from its own

    def __enter__(self) -> StepProgress:
        if live():
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<24}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[detail]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=stderr,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self, name: str, done: int, unit: str, *, total: int | None = None, detail: str = "") -> None:
        progress = self._progress  # once: another thread may stop the display meanwhile
        if progress is None:
            return
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = progress.add_task(
                    f"{self.title} {name}".strip(), total=None, count="", detail="", rate="", eta=""
                )
                self._started[name] = self._last_update
            self._last_update = time.monotonic()
        elapsed = self._last_update - self._started[name]
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{done:,} {unit}" if total is None else f"{done:,}/{total:,} {unit}"
        eta = ""
        if total is not None and rate > 0 and total > done:
            eta = f"~{(total - done) / rate:,.0f}s left"
        progress.update(
            self._tasks[name],
            completed=done,
            total=total,
            count=count,
            detail=detail,
            rate=f"{rate:,.0f}/s",
            eta=eta,
        )
