"""The `retailctl` command line: parse options, call the library, render, map errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from retailctl import __version__, docs_server, gold, pipeline, prune, schedule, status
from retailctl.cli import console
from retailctl.cli.render import (
    RunView,
    render_dbt,
    render_doctor,
    render_load,
    render_status,
    render_verify,
)
from retailctl.config import LOG_FORMATS, SETTING_SPECS, Settings, choose_env_file, load_settings
from retailctl.errors import ConfigError, RetailctlError, Terminated, from_os_error, step_of
from retailctl.extract import ENTITIES, extract, raise_for_failures
from retailctl.load import load
from retailctl.monitor import Monitor
from retailctl.store import state
from retailctl.store.db import Database, open_database
from retailctl.store.embedded import EmbeddedPostgres, pgdata_dir
from retailctl.store.lock import pipeline_lock
from retailctl.store.migrations import migrate

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
app.add_typer(db_app, name="db")
app.add_typer(api_app, name="api")
app.add_typer(state_app, name="state")
bronze_app = typer.Typer(help="Bronze file housekeeping.", no_args_is_help=True)
app.add_typer(bronze_app, name="bronze")

T = TypeVar("T")  # what a command body returns
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool cut off by its reader


@dataclasses.dataclass
class CliState:
    overrides: dict[str, Any]
    env_file: Path | None = None
    settings: Settings | None = None
    monitor: Monitor | None = None  # metrics and pings of a pipeline command, when configured


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


# -- config and database -------------------------------------------------------------------


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (on failure, an error object).")
]


@app.command("config")
def config_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print every setting, its value and where it came from (secrets shown as ***)."""

    def show() -> None:
        settings = settings_of(ctx)
        mode = (
            "demo" if settings.demo_mode else ("embedded" if settings.database_url is None else "configured")
        )
        if as_json:
            console.print_json(
                {
                    "mode": mode,
                    "settings": {
                        spec.env: {
                            "value": _typed_value(settings, spec.name),
                            "source": settings.sources[spec.name],
                        }
                        for spec in SETTING_SPECS
                    },
                }
            )
            return
        rows = [
            (spec.env, settings.display_value(spec.name), settings.sources[spec.name])
            for spec in SETTING_SPECS
        ]
        console.table("retailctl settings", ("setting", "value", "source"), rows)
        console.say(f"env file: {settings.env_file or '(none)'}")
        console.say(f"mode: {MODES[mode]}")

    run(ctx, show, as_json=as_json)


MODES = {
    "demo": "demo (bundled mock API, embedded PostgreSQL)",
    "embedded": "embedded PostgreSQL",
    "configured": "configured database",
}


def _typed_value(settings: Settings, name: str) -> Any:
    """A setting for --json: numbers as numbers, unset as null, secrets as ***."""
    value = getattr(settings, name)
    if value is None or isinstance(value, int | float):
        return value
    return settings.display_value(name)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Apply the SQL migrations not yet applied (every command also does this itself)."""

    def apply() -> None:
        with (
            database_of(settings_of(ctx), run_migrations=False) as database,
            database.connect(autocommit=True, purpose="migrate") as conn,
        ):
            applied = migrate(conn)
        if as_json:
            console.print_json({"applied": applied})
            return
        console.say(
            f"applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "schema up to date: no migration to apply"
        )

    run(ctx, apply, as_json=as_json)


@db_app.command("reset")
def db_reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: every table is deleted.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete the embedded database of this data dir, to start over (bronze files are kept)."""
    if not yes:
        console.error("db reset deletes the embedded database with all its tables; add --yes to confirm")
        raise typer.Exit(code=2)

    def reset() -> None:
        settings = settings_of(ctx)
        if settings.database_url is not None:
            raise ConfigError(
                "db reset deletes only the embedded PostgreSQL, and "
                "RETAIL_DATABASE_URL is set: retailctl never drops a configured "
                "database (drop its schemas meta, silver and gold yourself)"
            )
        pgdata = pgdata_dir(settings.data_dir)
        deleted = EmbeddedPostgres(settings.data_dir).reset()
        if as_json:
            console.print_json({"deleted": deleted, "pgdata": pgdata})
        elif deleted:
            console.say(
                f"deleted the embedded database in {pgdata}; the bronze files under "
                f"{settings.bronze_dir} are kept (the next load reads them again)"
            )
        else:
            console.say(f"no embedded database in {pgdata}: nothing to delete")

    run(ctx, reset, as_json=as_json)


# -- extract -------------------------------------------------------------------------------


@app.command("extract")
def extract_command(
    ctx: typer.Context,
    entity: Annotated[
        list[str] | None,
        typer.Option(help="Only this entity (repeatable): customers, products, sales.", show_default=False),
    ] = None,
    from_id: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Backfill: read sales from this id instead of the cursor (corrections older "
            "than RETAIL_SALES_LOOKBACK).",
            show_default=False,
        ),
    ] = None,
    to_id: Annotated[
        int | None, typer.Option(min=1, help="With --from-id: stop after this sale id.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Pull the API into Bronze NDJSON files: snapshots of customers and products, new sales
    (and the last RETAIL_SALES_LOOKBACK sales again, for corrections)."""
    if to_id is not None and from_id is None:
        raise typer.BadParameter("--to-id needs --from-id", param_hint="--to-id")
    if to_id is not None and from_id is not None and to_id < from_id:
        raise typer.BadParameter(f"--to-id {to_id} is below --from-id {from_id}", param_hint="--to-id")
    entities = entity or list(ENTITIES)
    unknown = sorted(set(entities) - set(ENTITIES))
    if unknown:
        raise typer.BadParameter(
            f"unknown entity {', '.join(unknown)}; choose from {', '.join(ENTITIES)}", param_hint="--entity"
        )

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            source_settings(settings, quiet=as_json) as settings,
            database_of(settings) as database,
            pipeline.single_step(settings, database, "extract", observer_of(ctx, view)),
            view,
        ):
            results = extract(
                settings,
                database,
                entities=entities,
                from_id=from_id,
                to_id=to_id,
                progress=view.extract_progress,
                warn=view.warn,
            )
        if as_json and not any(r.error for r in results):
            console.print_json(
                {"demo": settings.serving_demo_data, "entities": [r.to_dict() for r in results]}
            )
        elif as_json:
            pass  # the error object is the document
        else:
            for result in results:
                console.info(result.summary(), step="extract")
        raise_for_failures(results)  # an entity that failed, after the others ran: exit 1

    run(ctx, work, as_json=as_json, step="extract", monitored=True)


# -- load ----------------------------------------------------------------------------------


@app.command("load")
def load_command(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="List the files that would load; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Load every Bronze file not loaded yet into the Silver tables, each exactly once."""

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            database_of(settings) as database,
            pipeline.single_step(settings, database, "load", observer_of(ctx, view)),
        ):
            with view:
                result = load(database, settings.bronze_dir, dry_run=dry_run, progress=view.load_progress)
            render_load(result, dry_run=dry_run, as_json=as_json, bronze_dir=settings.bronze_dir)

    run(ctx, work, as_json=as_json, step="load", monitored=True)


# -- gold (dbt) ----------------------------------------------------------------------------


@app.command()
def transform(
    ctx: typer.Context,
    select: Annotated[str, typer.Option(help="core (snapshot + dims + fact), mart, or all.")] = "all",
    full_refresh: Annotated[
        bool, typer.Option(help="Rebuild the incremental models from silver (after a model changed shape).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the Gold models with dbt: the customer snapshot, then core, then the mart."""
    if select not in gold.SELECTIONS:
        raise typer.BadParameter("choose core, mart or all", param_hint="--select")

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            database_of(settings) as database,
            pipeline.single_step(settings, database, "transform", observer_of(ctx, view)),
            view,
        ):
            results = gold.transform(
                settings, database.url, select, full_refresh=full_refresh, on_node=view.dbt_node
            )
        if as_json:
            console.print_json({"commands": [r.to_dict() for r in results]})
        else:
            render_dbt(results, "transform")

    run(ctx, work, as_json=as_json, step="transform", monitored=True)


@app.command("test")
def test_command(
    ctx: typer.Context,
    changed: Annotated[
        bool,
        typer.Option(
            "--changed",
            help="Check only the Gold rows written since the last passing test run; no verify.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the dbt data tests and source freshness, then (the full test) verify that bronze,
    silver, the fact and the mart agree per day; exit 3 when a test fails or a day differs."""

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with (
            database_of(settings) as database,
            pipeline.single_step(settings, database, "test", observer_of(ctx, view)),
            database.connect(autocommit=True, purpose="test") as conn,
        ):
            with view:
                report = pipeline.check_gold(settings, database, conn, changed=changed, on_node=view.dbt_node)
            if not as_json:
                render_dbt(report.dbt, "test")
                if report.verified is not None:
                    render_verify(report.verified, as_json=False)
            report.raise_for_failures()  # with --json, the error object is the document
            if as_json:
                console.print_json(report.to_dict())

    run(ctx, work, as_json=as_json, step="test", monitored=True)


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="DAY",
            help="Only the days from this UTC day (YYYY-MM-DD).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Prove bronze, silver, the fact and the mart agree per day (sales, lines, amounts to the
    cent), and the source's count of sales where it reports one; exit 3 when they differ."""
    from retailctl import verify

    def work() -> None:
        settings = settings_of(ctx)
        with database_of(settings) as database, pipeline_lock(database, "verify"):
            result = verify.verify(database, settings, since.date() if since else None)
        render_verify(result, as_json=as_json)
        verify.raise_for_differences(result)  # with --json, the error object holds the result

    run(ctx, work, as_json=as_json, step="verify")


@app.command()
def deps(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Install dbt packages, if the dbt project lists any (it lists none by default)."""

    def work() -> None:
        settings = settings_of(ctx)
        with database_of(settings) as database:
            result = gold.deps(settings, database.url)
        if as_json:
            console.print_json({"installed": result is not None})
            return
        console.say(
            "dbt deps: no packages.yml, nothing to install"
            if result is None
            else "dbt deps: packages installed"
        )

    run(ctx, work, as_json=as_json)


@app.command()
def docs(
    ctx: typer.Context,
    serve: Annotated[bool, typer.Option(help="Serve the docs over HTTP afterwards, until Ctrl-C.")] = False,
    host: Annotated[str, typer.Option(help="--serve: the address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="--serve: the port (0: any free one).")] = 8081,
    as_json: JsonOption = False,
) -> None:
    """Generate the dbt documentation of the Gold models (under the data dir); --serve it."""

    def work() -> None:
        settings = settings_of(ctx)
        target = gold.DbtPaths.for_settings(settings).target
        with database_of(settings) as database:
            result = gold.docs(settings, database.url)
        if as_json and not serve:
            console.print_json({"success": result.success, "target": target, "seconds": result.seconds})
            return
        console.say(f"dbt docs generated in {target}")
        if serve:
            serve_docs(target, host, port)

    run(ctx, work, as_json=as_json)


def serve_docs(target: Path, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM; either ends it with one line and exit 0."""
    server = docs_server.open_server(target, host, port)
    console.say(f"serving the docs on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Terminated):
        pass
    finally:
        server.server_close()
    console.say("docs server stopped")


# -- the whole pipeline -----------------------------------------------------------------------


@app.command("run-all")
def run_all(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Extract, load, transform and test, under one lock; stop at the first failing step."""

    def work() -> None:
        settings = settings_of(ctx)
        view = RunView()
        with source_settings(settings, quiet=as_json) as settings, database_of(settings) as database:
            try:
                result = pipeline.run_all(settings, database, observer=observer_of(ctx, view))
            except BaseException as exc:
                view.close(exc)
                raise
        counted = view.close()
        if as_json:
            console.print_json(
                {
                    "run_id": result.run_id,
                    "trigger": result.trigger,
                    "status": "success",
                    "started_at": result.started_at,
                    "seconds": result.seconds,
                    "steps": [dataclasses.asdict(step) for step in result.steps],
                    "tally": dataclasses.asdict(counted) if counted else None,
                }
            )

    run(ctx, work, as_json=as_json, monitored=True)


@app.command("status")
def status_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Cursor, lock holder, recent runs, rows per layer, freshness, rejects."""

    def work() -> None:
        settings = settings_of(ctx)
        with (
            database_of(settings, run_migrations=False) as database,
            database.connect(autocommit=True) as conn,
        ):  # read-only: never migrates
            collected = status.collect(conn, settings.bronze_dir)
        if as_json:
            console.print_json(collected)
            return
        render_status(collected)

    run(ctx, work, as_json=as_json)


@app.command("doctor")
def doctor_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the API, the database, migrations, dbt, the data dir, the lock and the clock."""
    from retailctl import doctor

    def work() -> None:
        settings = settings_of(ctx)
        source = (
            source_settings(settings, quiet=True) if settings.demo_mode else contextlib.nullcontext(settings)
        )
        with source as settings:
            checks = doctor.diagnose(settings)
        if as_json:
            console.print_json(
                {"ok": not doctor.failed(checks), "checks": [check.to_dict() for check in checks]}
            )
        else:
            render_doctor(checks)
        if doctor.failed(checks):  # the report is the answer, even with --json: exit 1 after it
            failing = [check.name for check in checks if check.status == doctor.FAIL]
            console.error(f"doctor: {len(failing)} check(s) failed: {', '.join(failing)}")
            raise typer.Exit(code=1)

    run(ctx, work, as_json=as_json)


# -- state ---------------------------------------------------------------------------------


@state_app.command("show")
def state_show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print the sales cursor: the next sale id to read, the last run and its note."""

    def show() -> None:
        with database_of(settings_of(ctx)) as database, database.connect() as conn:
            cursor = state.read_cursor(conn)
        if as_json:
            console.print_json(dataclasses.asdict(cursor))
            return
        console.say(f"next sales id: {cursor.next_sales_id}")
        console.say(f"last run: {cursor.last_run_ts or 'never'}")
        console.say(f"note: {cursor.note or ''}")

    run(ctx, show, as_json=as_json)


@state_app.command("set")
def state_set(
    ctx: typer.Context,
    next_sales_id: Annotated[
        int | None, typer.Option(min=1, help="The sale id the next extract reads first.", show_default=False)
    ] = None,
    last_sales_id: Annotated[
        int | None, typer.Option(min=1, help="Deprecated alias of --next-sales-id.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Move the sales cursor, for a backfill or to skip ahead."""
    if last_sales_id is not None:
        console.warn("--last-sales-id is deprecated: it sets the next sale id to read; use --next-sales-id")
    if (next_sales_id is None) == (last_sales_id is None):
        raise typer.BadParameter("give the next sale id to read, once", param_hint="--next-sales-id")
    next_id = next_sales_id if next_sales_id is not None else last_sales_id
    assert next_id is not None

    def move() -> None:
        with (
            database_of(settings_of(ctx)) as database,
            pipeline_lock(database, "state set"),
            database.connect() as conn,
            conn.transaction(),
        ):
            before = state.read_cursor(conn).next_sales_id
            state.set_cursor(conn, next_id, f"set by hand with `retailctl state set` (was {before})")
        if as_json:
            console.print_json({"next_sales_id": next_id, "previous_next_sales_id": before})
            return
        console.say(f"next sales id: {before} -> {next_id}")

    run(ctx, move, as_json=as_json)


@state_app.command("reset")
def state_reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the next extract starts over.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Start over: the next extract reads every sale from id 1 and rewrites the snapshots."""
    if not yes:
        if as_json:
            console.print_json({"error": {"code": 2, "step": None, "message": CONFIRM_RESET}})
        console.error(CONFIRM_RESET)
        raise typer.Exit(code=2)

    def reset() -> None:
        with (
            database_of(settings_of(ctx)) as database,
            pipeline_lock(database, "state reset"),
            database.connect() as conn,
            conn.transaction(),
        ):
            before = state.read_cursor(conn).next_sales_id
            state.set_cursor(conn, 1, f"reset with `retailctl state reset` (was {before})")
            state.clear_snapshot_hashes(conn)
        if as_json:
            console.print_json(
                {"next_sales_id": 1, "previous_next_sales_id": before, "snapshots_cleared": True}
            )
            return
        console.say(f"next sales id: {before} -> 1; snapshots will be written again")

    run(ctx, reset, as_json=as_json)


CONFIRM_RESET = "state reset makes the next extract re-read every sale; add --yes to confirm"


# -- running unattended ----------------------------------------------------------------------


def _age(text: str) -> timedelta:
    try:
        return prune.parse_age(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@bronze_app.command("prune")
def bronze_prune(
    ctx: typer.Context,
    older_than: Annotated[
        timedelta, typer.Option(parser=_age, metavar="AGE", help="Age: 30d, 12h, 4w.")
    ] = "30d",  # type: ignore[assignment]
    dry_run: Annotated[bool, typer.Option(help="List what would go; delete nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete bronze files loaded and written before the cutoff (never unloaded or rejected ones)."""

    def work() -> None:
        settings = settings_of(ctx)
        with (
            database_of(settings) as database,
            pipeline_lock(database, "bronze prune"),
            database.connect(autocommit=True) as conn,
        ):
            result = prune.prune(conn, settings.bronze_dir, older_than, dry_run=dry_run)
        if as_json:
            console.print_json(
                {"dry_run": dry_run, "files": [str(f) for f in result.files], "bytes": result.bytes}
            )
            return
        verb = "would delete" if dry_run else "deleted"
        for path in result.files:
            console.say(f"{verb} {path}")
        console.say(f"{verb} {len(result.files)} file(s), {result.bytes / 1e6:.1f} MB")

    run(ctx, work, as_json=as_json)


@app.command("schedule")
def schedule_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="cron, systemd or logrotate.")],
    user: Annotated[
        str | None,
        typer.Option(
            help="Who runs it (default: you; for systemd as root, 'retailctl').", show_default=False
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(help="systemd: write the unit files here instead of printing them.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the crontab lines, systemd units or logrotate file for this install, paths filled in."""
    if kind not in ("cron", "systemd", "logrotate"):
        raise typer.BadParameter("choose cron, systemd or logrotate", param_hint="KIND")

    def work() -> None:
        settings = settings_of(ctx)
        install = schedule.Install.here(
            Path.cwd(),
            settings.data_dir,
            settings.env_file,
            user or (schedule.default_user() if kind == "systemd" else getpass.getuser()),
        )
        if kind == "cron":
            text = schedule.cron(install).rstrip()
            console.print_json({"kind": kind, "text": text}) if as_json else console.say(text)
        elif kind == "logrotate":
            text = schedule.logrotate(install).rstrip()
            console.print_json({"kind": kind, "text": text}) if as_json else console.say(text)
        else:
            write_units(install, output_dir, embedded=settings.database_url is None, as_json=as_json)

    run(ctx, work, as_json=as_json)


def write_units(
    install: schedule.Install, output_dir: Path | None, *, embedded: bool, as_json: bool = False
) -> None:
    """The units on stdout (or into files); next steps and warnings on stderr."""
    units = schedule.systemd_units(install)
    written = []
    for name, text in units.items():
        if output_dir is None and not as_json:
            console.say(f"# --- {name}")
            console.say(text.rstrip())
        elif output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / name).write_text(text)
            written.append(str(output_dir / name))
            console.info(f"wrote {output_dir / name}")
    if as_json:
        console.print_json({"kind": "systemd", "units": units, "written": written})
    for warning in schedule.systemd_warnings(install, embedded):
        console.warn(warning)
    console.notice("next steps, as root:")
    for step in schedule.systemd_next_steps(install, output_dir):
        console.notice(f"  {step}")


# -- the mock API --------------------------------------------------------------------------


@api_app.command("serve")
def api_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 4010,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 42,
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 500,
    products: Annotated[int, typer.Option(min=1, help="Number of products.")] = 200,
    sales: Annotated[int, typer.Option(min=0, help="Number of sales at start.")] = 10_000,
    live: Annotated[float, typer.Option(min=0, help="New sales per minute while serving.")] = 0.0,
    fail_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of requests answered 500/503.")] = 0.0,
    throttle_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests answered 429 with Retry-After.")
    ] = 0.0,
    latency_ms: Annotated[int, typer.Option(min=0, help="Delay added to every request.")] = 0,
    invalid_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of records served invalid.")] = 0.0,
    inconsistent_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of sales whose total differs from their lines.")
    ] = 0.0,
    gap_every: Annotated[
        int, typer.Option(min=0, help="Leave a gap of 3 ids after every N sales (0 = dense ids).")
    ] = 0,
    hidden_products: Annotated[
        int, typer.Option(min=0, help="The last N products are sold but not listed by /products.")
    ] = 0,
    customer_version: Annotated[int, typer.Option(min=0, help="Bump to change some customers' emails.")] = 0,
    corrections: Annotated[
        int,
        typer.Option(
            min=0,
            help="Published sales corrected per round: another customer, another day, a line "
            "removed or a quantity changed, in turn.",
        ),
    ] = 0,
    correction_version: Annotated[
        int, typer.Option(min=0, help="Correction rounds 0..V are applied: bump for one more round.")
    ] = 0,
    correction_window: Annotated[
        int | None,
        typer.Option(
            min=1, help="Correct only among the last N sales (unset: any sale).", show_default=False
        ),
    ] = None,
    delist_products: Annotated[
        int, typer.Option(min=0, help="This many products (a seeded choice) missing from /products.")
    ] = 0,
    delist_customers: Annotated[
        int, typer.Option(min=0, help="This many customers (a seeded choice) missing from /customers.")
    ] = 0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RETAIL_API_KEY",
            help="The key clients must send [default: the demo key].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the bundled mock retail API (docs at /docs).

    POST /_admin/corrections?count=K&window=N and POST /_admin/delist?products=N&customers=M
    (same key) change the source's past while it serves.
    """
    from mock_api import DEFAULT_API_KEY, DataConfig, FaultConfig, MockConfig
    from mock_api.server import serve

    config = MockConfig(
        data=DataConfig(
            seed=seed,
            customers=customers,
            products=products,
            sales=sales,
            live_rate_per_min=live,
            gap_every=gap_every,
            invalid_rate=invalid_rate,
            inconsistent_rate=inconsistent_rate,
            hidden_products=hidden_products,
            customer_version=customer_version,
            corrections=corrections,
            correction_version=correction_version,
            correction_window=correction_window,
            delisted_products=delist_products,
            delisted_customers=delist_customers,
        ),
        faults=FaultConfig(fail_rate=fail_rate, throttle_rate=throttle_rate, latency_ms=latency_ms),
        api_key=api_key or DEFAULT_API_KEY,
    )
    console.notice(f"mock retail API on http://{host}:{port} (docs at /docs)")
    serve(config, host=host, port=port)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        app()
    except Terminated:  # raised outside a command body (during start-up or teardown)
        console.error("stopped by SIGTERM")
        sys.exit(Terminated.exit_code)
    except BrokenPipeError:  # the Python docs' "Note on SIGPIPE": quiet, no traceback
        console.silence(sys.stdout)
        sys.exit(BROKEN_PIPE_EXIT)
