"""Looking at an install: its settings, its state, and what is wrong with it."""

from __future__ import annotations

import contextlib
from typing import Any

import typer

from retailctl import status
from retailctl.cli import console
from retailctl.cli.render import render_doctor, render_status
from retailctl.cli.runner import JsonOption, database_of, run, settings_of, source_settings
from retailctl.config import SETTING_SPECS, Settings


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


def status_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Cursor, lock holder, recent runs, rows per layer, freshness, rejects."""

    def work() -> None:
        settings = settings_of(ctx)
        with (
            database_of(settings, run_migrations=False) as database,
            database.connect(autocommit=True) as conn,
        ):  # read-only: never migrates
            collected = status.collect(conn, settings.bronze_location)
        if as_json:
            console.print_json(collected)
            return
        render_status(collected)

    run(ctx, work, as_json=as_json)


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
