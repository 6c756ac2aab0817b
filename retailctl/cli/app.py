"""The `retailctl` command line: parse options, call the library, render, map errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from retailctl import __version__, gold, pipeline, prune, schedule, status
from retailctl.cli import console
from retailctl.cli.render import render_dbt, render_load, render_status, render_step
from retailctl.config import SETTING_SPECS, Settings, load_settings
from retailctl.errors import RetailctlError, Terminated
from retailctl.extract import ENTITIES, extract
from retailctl.load import load
from retailctl.store import state
from retailctl.store.db import open_database
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
state_app = typer.Typer(help="Show or move the sales cursor (meta.ingestion_state).",
                        no_args_is_help=True)
api_app = typer.Typer(help="The bundled mock retail API.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(api_app, name="api")
app.add_typer(state_app, name="state")
bronze_app = typer.Typer(help="Bronze file housekeeping.", no_args_is_help=True)
app.add_typer(bronze_app, name="bronze")

T = TypeVar("T")  # what a command body returns


@dataclasses.dataclass
class CliState:
    overrides: dict[str, Any]
    settings: Settings | None = None


def _version(value: bool) -> None:
    if value:
        console.say(f"retailctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(
        help="Data directory (bronze files, dbt state, embedded database). [env: RETAIL_DATA_DIR]",
        show_default=False)] = None,
    database_url: Annotated[str | None, typer.Option(
        help="Postgres URL; unset = embedded PostgreSQL. [env: RETAIL_DATABASE_URL]",
        show_default=False)] = None,
    api_url: Annotated[str | None, typer.Option(
        help="Retail API base URL; unset = demo mock API. [env: RETAIL_API_URL]",
        show_default=False)] = None,
    trigger: Annotated[str | None, typer.Option(
        help="Who started this run: cli, cron, systemd, airflow. [env: RETAIL_TRIGGER]",
        show_default=False)] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Hourly retail ETL: a retail REST API into Bronze NDJSON, Silver Postgres and Gold dbt."""
    ctx.obj = CliState(overrides={"data_dir": data_dir, "database_url": database_url,
                                  "api_url": api_url, "trigger": trigger})


def settings_of(ctx: typer.Context) -> Settings:
    cli_state: CliState = ctx.find_root().obj
    if cli_state.settings is None:
        cli_state.settings = load_settings(cli_state.overrides)
    return cli_state.settings


def run(ctx: typer.Context, action: Callable[[], T]) -> T:
    """Run a command body; turn retailctl's errors into one line and an exit code."""
    try:
        return action()
    except RetailctlError as exc:
        _fail(ctx, str(exc), exc.exit_code)
    except Terminated:
        _fail(ctx, "stopped by SIGTERM; the open transaction was rolled back", Terminated.exit_code)
    except KeyboardInterrupt:
        _fail(ctx, "interrupted; the open transaction was rolled back", 130)
    except Exception as exc:  # a bug: keep the traceback, but never a secret in it
        _fail(ctx, f"internal error ({type(exc).__name__}: {exc}); please report it", 1,
              detail=traceback.format_exc().rstrip())


def _fail(ctx: typer.Context, message: str, code: int, detail: str = "") -> NoReturn:
    cli_state: CliState | None = ctx.find_root().obj
    if cli_state is not None and cli_state.settings is not None:
        message, detail = cli_state.settings.redact(message), cli_state.settings.redact(detail)
    if detail:
        console.notice(detail)
    console.error(message)
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
        notice = (f"DEMO MODE: no RETAIL_API_URL or RETAIL_DATABASE_URL is set, so this run uses "
                  f"generated demo data from the bundled mock API at {server.url} and an embedded "
                  f"PostgreSQL under {settings.data_dir}")
        (console.notice if quiet else console.say)(notice)
        yield dataclasses.replace(settings, api_url=server.url, api_key=DEFAULT_API_KEY,
                                  serving_demo_data=True)


# -- config and database -------------------------------------------------------------------


@app.command("config")
def config_command(ctx: typer.Context) -> None:
    """Print every setting, its value and where it came from (secrets shown as ***)."""

    def show() -> None:
        settings = settings_of(ctx)
        rows = [(spec.env, settings.display_value(spec.name), settings.sources[spec.name])
                for spec in SETTING_SPECS]
        console.table("retailctl settings", ("setting", "value", "source"), rows)
        mode = "demo (bundled mock API, embedded PostgreSQL)" if settings.demo_mode else (
            "embedded PostgreSQL" if settings.database_url is None else "configured database")
        console.say(f"mode: {mode}")

    run(ctx, show)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply the SQL migrations not yet applied (every command also does this itself)."""

    def apply() -> None:
        with open_database(settings_of(ctx), run_migrations=False) as database, \
                database.connect(autocommit=True, purpose="migrate") as conn:
            applied = migrate(conn)
        console.say(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied
                    else "schema up to date: no migration to apply")

    run(ctx, apply)


# -- extract -------------------------------------------------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON summary document.")]


@app.command("extract")
def extract_command(
    ctx: typer.Context,
    entity: Annotated[list[str] | None, typer.Option(
        help="Only this entity (repeatable): customers, products, sales.",
        show_default=False)] = None,
    from_id: Annotated[int | None, typer.Option(
        min=1, help="Backfill: read sales from this id instead of the cursor.",
        show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Pull the API into Bronze NDJSON files: snapshots of customers and products, new sales."""
    entities = entity or list(ENTITIES)
    unknown = sorted(set(entities) - set(ENTITIES))
    if unknown:
        raise typer.BadParameter(f"unknown entity {', '.join(unknown)}; "
                                 f"choose from {', '.join(ENTITIES)}", param_hint="--entity")

    def work() -> None:
        settings = settings_of(ctx)
        with source_settings(settings, quiet=as_json) as settings, \
                open_database(settings) as database, pipeline.single_step(settings, database, "extract"), \
                console.StepProgress() as progress:
            results = extract(
                settings, database, entities=entities, from_id=from_id,
                progress=lambda name, done, pages: progress.update(name, done, f"{pages} pages"),
                warn=console.warn)
        if as_json:
            console.print_json({"demo": settings.serving_demo_data,
                                "entities": [r.to_dict() for r in results]})
        else:
            for result in results:
                console.say(result.summary())

    run(ctx, work)


# -- load ----------------------------------------------------------------------------------


@app.command("load")
def load_command(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="List the files that would load; change nothing.")
                       ] = False,
    as_json: JsonOption = False,
) -> None:
    """Load every Bronze file not loaded yet into the Silver tables, each exactly once."""

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database, pipeline.single_step(settings, database, "load"):
            with console.StepProgress("rows") as progress:
                result = load(
                    database, settings.bronze_dir, dry_run=dry_run,
                    progress=lambda table, rows, files: progress.update(table, rows, f"{files} files"))
            render_load(result, dry_run=dry_run, as_json=as_json)

    run(ctx, work)


# -- gold (dbt) ----------------------------------------------------------------------------


@app.command()
def transform(
    ctx: typer.Context,
    select: Annotated[str, typer.Option(help="core (snapshot + dims + fact), mart, or all.")] = "all",
    full_refresh: Annotated[bool, typer.Option(
        help="Rebuild the incremental models from silver (after a model changed shape).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the Gold models with dbt: the customer snapshot, then core, then the mart."""
    if select not in gold.SELECTIONS:
        raise typer.BadParameter("choose core, mart or all", param_hint="--select")

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database, \
                pipeline.single_step(settings, database, "transform"):
            results = gold.transform(settings, database.url, select, full_refresh=full_refresh)
        console.print_json([r.to_dict() for r in results]) if as_json else render_dbt(results)

    run(ctx, work)


@app.command("test")
def test_command(
    ctx: typer.Context,
    changed: Annotated[bool, typer.Option(
        "--changed", help="Check only the Gold rows written since the last passing test run.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the dbt data tests and source freshness; exit 3 when a test fails."""

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database, \
                pipeline.single_step(settings, database, "test"), \
                database.connect(autocommit=True, purpose="test") as conn:
            results = pipeline.run_tests(settings, database, conn, changed=changed)
            console.print_json([r.to_dict() for r in results]) if as_json else render_dbt(results)
            gold.raise_for_failures(results)

    run(ctx, work)


@app.command()
def deps(ctx: typer.Context) -> None:
    """Install dbt packages, if the dbt project lists any (it lists none by default)."""

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database:
            result = gold.deps(settings, database.url)
        console.say("dbt deps: no packages.yml, nothing to install" if result is None
                    else "dbt deps: packages installed")

    run(ctx, work)


@app.command()
def docs(
    ctx: typer.Context,
    serve: Annotated[bool, typer.Option(help="Serve the docs on 127.0.0.1:8081 afterwards.")] = False,
) -> None:
    """Generate the dbt documentation of the Gold models (under the data dir)."""

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database:
            gold.docs(settings, database.url, serve=serve)
        console.say(f"dbt docs generated in {gold.DbtPaths.for_settings(settings).target}")

    run(ctx, work)


# -- the whole pipeline -----------------------------------------------------------------------


@app.command("run-all")
def run_all(ctx: typer.Context) -> None:
    """Extract, load, transform and test, under one lock; stop at the first failing step."""

    def work() -> None:
        settings = settings_of(ctx)
        with source_settings(settings) as settings, open_database(settings) as database, \
                console.StepProgress() as progress:
            result = pipeline.run_all(
                settings, database, on_step=render_step, warn=console.warn,
                progress=lambda name, done, pages: progress.update(name, done, f"{pages} pages"))
        console.say(f"run {result.run_id} ({result.trigger}) succeeded in {result.seconds:.1f}s")

    run(ctx, work)


@app.command("status")
def status_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Cursor, lock holder, recent runs, rows per layer, freshness, rejects."""

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database, database.connect(autocommit=True) as conn:
            collected = status.collect(conn, settings.bronze_dir)
        if as_json:
            console.print_json(collected)
            return
        render_status(collected)

    run(ctx, work)


# -- state ---------------------------------------------------------------------------------


@state_app.command("show")
def state_show(ctx: typer.Context) -> None:
    """Print the sales cursor: the next sale id to read, the last run and its note."""

    def show() -> None:
        with open_database(settings_of(ctx)) as database, database.connect() as conn:
            cursor = state.read_cursor(conn)
        console.say(f"next sales id: {cursor.next_sales_id}")
        console.say(f"last run: {cursor.last_run_ts or 'never'}")
        console.say(f"note: {cursor.note or ''}")

    run(ctx, show)


@state_app.command("set")
def state_set(
    ctx: typer.Context,
    last_sales_id: Annotated[int, typer.Option(
        min=1, help="The next sale id the next extract reads (as in the original project).")],
) -> None:
    """Move the sales cursor, for a backfill or to skip ahead."""

    def move() -> None:
        with open_database(settings_of(ctx)) as database, pipeline_lock(database, "state set"), \
                database.connect() as conn, conn.transaction():
            before = state.read_cursor(conn).next_sales_id
            state.set_cursor(conn, last_sales_id,
                             f"set by hand with `retailctl state set` (was {before})")
        console.say(f"next sales id: {before} -> {last_sales_id}")

    run(ctx, move)


@state_app.command("reset")
def state_reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the next extract starts over.")] = False,
) -> None:
    """Start over: the next extract reads every sale from id 1 and rewrites the snapshots."""
    if not yes:
        console.error("state reset makes the next extract re-read every sale; add --yes to confirm")
        raise typer.Exit(code=2)

    def reset() -> None:
        with open_database(settings_of(ctx)) as database, pipeline_lock(database, "state reset"), \
                database.connect() as conn, conn.transaction():
            before = state.read_cursor(conn).next_sales_id
            state.set_cursor(conn, 1, f"reset with `retailctl state reset` (was {before})")
            state.clear_snapshot_hashes(conn)
        console.say(f"next sales id: {before} -> 1; snapshots will be written again")

    run(ctx, reset)


# -- running unattended ----------------------------------------------------------------------


def _age(text: str) -> timedelta:
    try:
        return prune.parse_age(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@bronze_app.command("prune")
def bronze_prune(
    ctx: typer.Context,
    older_than: Annotated[timedelta, typer.Option(
        parser=_age, metavar="AGE", help="Age: 30d, 12h, 4w.")] = "30d",  # type: ignore[assignment]
    dry_run: Annotated[bool, typer.Option(help="List what would go; delete nothing.")] = False,
) -> None:
    """Delete bronze files loaded and written before the cutoff (never unloaded or rejected ones)."""

    def work() -> None:
        settings = settings_of(ctx)
        with open_database(settings) as database, pipeline_lock(database, "bronze prune"), \
                database.connect(autocommit=True) as conn:
            result = prune.prune(conn, settings.bronze_dir, older_than, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for path in result.files:
            console.say(f"{verb} {path}")
        console.say(f"{verb} {len(result.files)} file(s), {result.bytes / 1e6:.1f} MB")

    run(ctx, work)


@app.command("schedule")
def schedule_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="cron or systemd.")],
    user: Annotated[str | None, typer.Option(
        help="systemd: the user the service runs as (default: you, or 'retailctl' for root).",
        show_default=False)] = None,
    output_dir: Annotated[Path | None, typer.Option(
        help="systemd: write the unit files here instead of printing them.",
        show_default=False)] = None,
) -> None:
    """Print the crontab line or the systemd units for this install, paths filled in."""
    if kind not in ("cron", "systemd"):
        raise typer.BadParameter("choose cron or systemd", param_hint="KIND")

    def work() -> None:
        settings = settings_of(ctx)
        workdir = Path.cwd()
        if kind == "cron":
            console.say(schedule.cron(workdir, settings.data_dir).rstrip())
            return
        service_user = user or schedule.default_user()
        for name, text in schedule.systemd_units(workdir, settings.data_dir, service_user).items():
            if output_dir is None:
                console.say(f"# --- {name}")
                console.say(text.rstrip())
            else:
                output_dir.mkdir(parents=True, exist_ok=True)
                (output_dir / name).write_text(text)
                console.say(f"wrote {output_dir / name}")

    run(ctx, work)


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
    fail_rate: Annotated[float, typer.Option(
        min=0, max=1, help="Share of requests answered 500/503.")] = 0.0,
    throttle_rate: Annotated[float, typer.Option(
        min=0, max=1, help="Share of requests answered 429 with Retry-After.")] = 0.0,
    latency_ms: Annotated[int, typer.Option(min=0, help="Delay added to every request.")] = 0,
    invalid_rate: Annotated[float, typer.Option(
        min=0, max=1, help="Share of records served invalid.")] = 0.0,
    inconsistent_rate: Annotated[float, typer.Option(
        min=0, max=1, help="Share of sales whose total differs from their lines.")] = 0.0,
    gap_every: Annotated[int, typer.Option(
        min=0, help="Leave a gap of 3 ids after every N sales (0 = dense ids).")] = 0,
    hidden_products: Annotated[int, typer.Option(
        min=0, help="The last N products are sold but not listed by /products.")] = 0,
    customer_version: Annotated[int, typer.Option(
        min=0, help="Bump to change some customers' emails.")] = 0,
    api_key: Annotated[str | None, typer.Option(
        envvar="RETAIL_API_KEY", help="The key clients must send [default: the demo key].",
        show_default=False)] = None,
) -> None:
    """Serve the bundled mock retail API (docs at /docs)."""
    from mock_api import DEFAULT_API_KEY, DataConfig, FaultConfig, MockConfig
    from mock_api.server import serve

    config = MockConfig(
        data=DataConfig(seed=seed, customers=customers, products=products, sales=sales,
                        live_rate_per_min=live, gap_every=gap_every, invalid_rate=invalid_rate,
                        inconsistent_rate=inconsistent_rate, hidden_products=hidden_products,
                        customer_version=customer_version),
        faults=FaultConfig(fail_rate=fail_rate, throttle_rate=throttle_rate,
                           latency_ms=latency_ms),
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
