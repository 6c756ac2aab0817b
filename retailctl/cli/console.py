"""Output: rich on a terminal, plain lines in cron logs and pipes; errors on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def interactive() -> bool:
    """A person is watching: show progress bars and tables, not log lines."""
    return stdout.is_terminal


def say(message: str) -> None:
    """A plain line: cron logs and pipes get it byte for byte (no wrapping, no tab expansion)."""
    print(message, flush=True)


def notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")
    sys.stdout.flush()


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
