"""What every command shares: settings, the database, the run wrapper that maps errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from retailctl import pipeline, stopping
from retailctl.cli import console
from retailctl.cli.render import RunView
from retailctl.config import SETTING_SPECS, Settings, choose_env_file, load_settings
from retailctl.errors import RetailctlError, Terminated, from_os_error, step_of
from retailctl.monitor import Monitor
from retailctl.store.db import Database, open_database
from retailctl.store.embedded import pgdata_dir

T = TypeVar("T")  # what a command body returns
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool cut off by its reader

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (on failure, an error object).")
]


@dataclasses.dataclass
class CliState:
    overrides: dict[str, Any]
    env_file: Path | None = None
    settings: Settings | None = None
    monitor: Monitor | None = None  # metrics and pings of a pipeline command, when configured


def settings_of(ctx: typer.Context) -> Settings:
    cli_state: CliState = ctx.find_root().obj
    if cli_state.settings is None:
        env_file = choose_env_file(cli_state.env_file, os.environ)
        settings = load_settings(cli_state.overrides, env_file=env_file)
        console.configure(log_format=settings.log_format)
        for spec in SETTING_SPECS:
            console.detail(
                f"setting {spec.env}={settings.display_value(spec.name)} ({settings.sources[spec.name]})"
            )
        cli_state.settings = settings
    return cli_state.settings


@contextlib.contextmanager
def database_of(settings: Settings, *, run_migrations: bool = True) -> Iterator[Database]:
    """The command's database; a run on the embedded server says so first, and where its data
    lives (the demo banner says it in demo mode), so that a different working directory never
    silently means a different, empty database."""
    if settings.database_url is None and not settings.serving_demo_data:
        console.notice(
            f"embedded PostgreSQL (RETAIL_DATABASE_URL is not set): data in "
            f"{pgdata_dir(settings.data_dir)} for the data dir {settings.data_dir}"
        )
    with open_database(settings, run_migrations=run_migrations) as database:
        yield database


def observer_of(ctx: typer.Context, view: RunView) -> pipeline.RunObserver:
    """The view, and the monitor when the command has one."""
    monitor = ctx.find_root().obj.monitor
    return view if monitor is None else pipeline.Observers(view, monitor)


def run(
    ctx: typer.Context,
    action: Callable[[], T],
    *,
    as_json: bool = False,
    step: str | None = None,
    monitored: bool = False,
) -> T:
    """Run a command body; turn retailctl's errors into one line and an exit code.

    `step`: the pipeline step the command is (for the JSON error object). `monitored`: a
    pipeline run, reported to the metrics file and the ping URL with the exit code it ends with.
    """
    console.configure(stdout_json=as_json)
    cli_state: CliState = ctx.find_root().obj
    try:
        if monitored:
            settings = settings_of(ctx)
            cli_state.monitor = Monitor.for_settings(
                settings, warn=lambda message: console.warn(settings.redact(message))
            )
        result = action()
        stopping.raise_if_stopped()  # a stop signal dropped where Python ignores exceptions
    except (typer.Exit, typer.Abort, typer.TyperException):  # Typer's own: exit as it says
        raise
    except BrokenPipeError:  # output written past console's guard (it silences, not raises)
        console.silence(sys.stdout)
        raise typer.Exit(code=BROKEN_PIPE_EXIT) from None
    except BaseException as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        code, message, detail = failure
        message, detail = _redact(ctx, message), _redact(ctx, detail)
        if cli_state.monitor is not None:
            cli_state.monitor.finish(code, message)
        _fail(
            message,
            code,
            detail=detail,
            step=step_of(exc) or step,
            as_json=as_json,
            details=getattr(exc, "details", None),
        )
    if cli_state.monitor is not None:
        cli_state.monitor.finish(0)
    return result


def _failure(exc: BaseException) -> tuple[int, str, str] | None:
    """(exit code, message, traceback) of a failure; None for what is not ours to handle."""
    if isinstance(exc, RetailctlError):
        return exc.exit_code, str(exc), ""
    if isinstance(exc, Terminated):
        return Terminated.exit_code, "stopped by SIGTERM; the open transaction was rolled back", ""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted; the open transaction was rolled back", ""
    if isinstance(exc, OSError):  # the data dir's file system: unwritable (78), full (1)
        error = from_os_error(exc)
        return error.exit_code, str(error), ""
    if isinstance(exc, Exception):  # a bug: keep the traceback, but never a secret in it
        return (
            1,
            f"internal error ({type(exc).__name__}: {exc}); please report it",
            traceback.format_exc().rstrip(),
        )
    return None


def _redact(ctx: typer.Context, text: str) -> str:
    cli_state: CliState | None = ctx.find_root().obj
    if cli_state is not None and cli_state.settings is not None:
        return cli_state.settings.redact(text)
    return text


def _fail(
    message: str,
    code: int,
    *,
    detail: str = "",
    step: str | None = None,
    as_json: bool = False,
    details: dict[str, Any] | None = None,
) -> NoReturn:
    """The error line on stderr (and with --json, the error object on stdout, with the
    error's `details` when it has some); exit `code`."""
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    if as_json:
        error = {"code": code, "step": step, "message": message}
        console.print_json({"error": {**error, "details": details} if details else error})
    console.error(message, detail=detail, code=code, step=step)
    raise typer.Exit(code=code) from None


@contextlib.contextmanager
def source_settings(settings: Settings, *, quiet: bool = False) -> Iterator[Settings]:
    """The settings to extract with: in demo mode, pointed at a mock API started for the command."""
    if not settings.demo_mode:
        settings.require_source()
        yield settings
        return
    from mock_api import DEFAULT_API_KEY, BackgroundServer, MockConfig

    with BackgroundServer(MockConfig()) as server:
        notice = (
            f"DEMO MODE: no RETAIL_API_URL or RETAIL_DATABASE_URL is set, so this run uses "
            f"generated demo data from the bundled mock API at {server.url} and an embedded "
            f"PostgreSQL with its data in {pgdata_dir(settings.data_dir)} (bronze files "
            f"under {settings.data_dir}; `retailctl db reset --yes` deletes the database)"
        )
        (console.notice if quiet else console.info)(notice)
        yield dataclasses.replace(
            settings, api_url=server.url, api_key=DEFAULT_API_KEY, serving_demo_data=True
        )
