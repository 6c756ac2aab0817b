"""Output: rich on a terminal, plain lines in cron logs and pipes; errors on stderr.

A reader that goes away (`retailctl status | head -5`, `| grep -q`) silences the stream for the
rest of the command instead of failing it: the work finishes and the exit code is the work's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


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


def say(message: str) -> None:
    """A plain line: cron logs and pipes get it byte for byte (no wrapping, no tab expansion)."""
    write(sys.stdout, f"{message}\n")


def notice(message: str) -> None:
    write(sys.stderr, f"{message}\n")


def warn(message: str) -> None:
    write(sys.stderr, f"warning: {message}\n")


def error(message: str) -> None:
    write(sys.stderr, f"error: {message}\n")


def print_json(document: Any) -> None:
    write(sys.stdout, orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; tab-separated lines with a header otherwise."""
    if interactive():
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
    """Live progress on a terminal (records and records/s per entity); silent otherwise."""

    def __init__(self, unit: str = "records") -> None:
        self.unit = unit
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> StepProgress:
        if interactive():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description:<16}"),
                TextColumn("{task.completed:>10,.0f} " + self.unit),
                TextColumn("{task.fields[detail]}"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                console=stderr, transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, name: str, done: int, detail: str = "") -> None:
        if self._progress is None:
            return
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=None, detail="", rate="")
        task_id = self._tasks[name]
        task = self._progress.tasks[self._tasks[name]]
        rate = done / task.elapsed if task.elapsed else 0.0
        self._progress.update(task_id, completed=done, detail=detail, rate=f"{rate:,.0f}/s")
