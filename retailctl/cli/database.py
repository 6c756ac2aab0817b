"""The database and the sales cursor by hand: migrate, reset, show and move the cursor."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from retailctl.cli import console
from retailctl.cli.runner import JsonOption, database_of, run, settings_of
from retailctl.errors import ConfigError
from retailctl.store import state
from retailctl.store.embedded import EmbeddedPostgres, pgdata_dir
from retailctl.store.lock import pipeline_lock
from retailctl.store.migrations import migrate


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
