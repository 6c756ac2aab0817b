"""The `retailctl` command tree: the root options, every command in its place, and `main`.

Each command's body lives in the module of its group (`steps`, `database`, `diagnose`,
`unattended`, `dbt_docs`, `mock`); what they share (settings, the database, the run wrapper
that maps errors to exit codes) in `runner`. The order here is the order of `--help`.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from retailctl import __version__, stopping
from retailctl.cli import console, database, dbt_docs, diagnose, mock, steps, unattended
from retailctl.cli.runner import BROKEN_PIPE_EXIT, CliState
from retailctl.config import LOG_FORMATS
from retailctl.errors import Terminated

app = typer.Typer(
    name="retailctl",
    help="Hourly retail ETL: a retail REST API into Bronze NDJSON, Silver Postgres and Gold dbt.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never show locals: they hold secrets
    add_completion=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
state_app = typer.Typer(help="Show or move the sales cursor (meta.ingestion_state).", no_args_is_help=True)
api_app = typer.Typer(help="The bundled mock retail API.", no_args_is_help=True)
bronze_app = typer.Typer(help="Bronze file housekeeping.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(api_app, name="api")
app.add_typer(state_app, name="state")
app.add_typer(bronze_app, name="bronze")


def _version(value: bool) -> None:
    if value:
        console.say(f"retailctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Data directory (bronze files, dbt state, embedded database). [env: RETAIL_DATA_DIR]",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Postgres URL; unset = embedded PostgreSQL. [env: RETAIL_DATABASE_URL]", show_default=False
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            help="Retail API base URL; unset = demo mock API. [env: RETAIL_API_URL]", show_default=False
        ),
    ] = None,
    trigger: Annotated[
        str | None,
        typer.Option(
            help="Who started this run: cli, cron, systemd, airflow. [env: RETAIL_TRIGGER]",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings, errors and what the command was asked for.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also a line per page, file and dbt node, and each setting's source."
        ),
    ] = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            readable=False,  # checked by choose_env_file: exit 78 like RETAIL_ENV_FILE, not 2
            help="Read settings from this file instead of ./.env (it must exist). [env: RETAIL_ENV_FILE]",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Hourly retail ETL: a retail REST API into Bronze NDJSON, Silver Postgres and Gold dbt."""
    if quiet and verbose:
        raise typer.BadParameter("choose one of them", param_hint="--quiet / --verbose")
    early_format = os.environ.get("RETAIL_LOG_FORMAT")  # before settings: their own errors too
    console.configure(
        verbosity=console.QUIET if quiet else console.VERBOSE if verbose else console.NORMAL,
        log_format=early_format if early_format in LOG_FORMATS else None,
    )
    ctx.obj = CliState(
        overrides={
            "data_dir": data_dir,
            "database_url": database_url,
            "api_url": api_url,
            "trigger": trigger,
        },
        env_file=env_file,
    )


app.command("config")(diagnose.config_command)
db_app.command("migrate")(database.db_migrate)
db_app.command("reset")(database.db_reset)
app.command("extract")(steps.extract_command)
app.command("load")(steps.load_command)
app.command("transform")(steps.transform)
app.command("test")(steps.test_command)
app.command("verify")(steps.verify_command)
app.command("deps")(dbt_docs.deps)
app.command("docs")(dbt_docs.docs)
app.command("run-all")(steps.run_all)
app.command("status")(diagnose.status_command)
app.command("doctor")(diagnose.doctor_command)
state_app.command("show")(database.state_show)
state_app.command("set")(database.state_set)
state_app.command("reset")(database.state_reset)
bronze_app.command("prune")(unattended.bronze_prune)
app.command("schedule")(unattended.schedule_command)
api_app.command("serve")(mock.api_serve)


HTTPX_CLI = "httpx._main"


def main() -> None:
    """The `retailctl` process: the CLI frozen, the command, then an exit that skips the
    collector's full passes."""
    # The CLI's modules are imported and live as long as the process: frozen, the garbage
    # collector's full passes skip them (an idle run-all made one, ~40 ms; --version none).
    gc.freeze()
    # httpx imports its own command line (click, pygments, rich's syntax and progress) when
    # click is installed, as dbt has it: ~17 ms of every extracting process, never used here.
    # A None in sys.modules makes that import fail; httpx then defines a `main` that says so.
    sys.modules.setdefault(HTTPX_CLI, None)  # type: ignore[arg-type]
    stopping.install()  # SIGTERM raises Terminated; neither signal is lost (see stopping)
    try:
        app()
    except Terminated:  # raised outside a command body (during start-up or teardown)
        console.error("stopped by SIGTERM")
        sys.exit(Terminated.exit_code)
    except BrokenPipeError:  # the Python docs' "Note on SIGPIPE": quiet, no traceback
        console.silence(sys.stdout)
        sys.exit(BROKEN_PIPE_EXIT)
    finally:
        # Interpreter shutdown runs full garbage collections over every object left: with dbt
        # loaded, 0.6-0.7 s of an hourly run after its work had ended. Frozen objects are left
        # out of those passes; atexit handlers (the log's flush) and module teardown still run,
        # and only garbage in reference cycles is left for the OS to reclaim (retailctl closes
        # its files and connections itself, in `with` blocks).
        gc.freeze()
