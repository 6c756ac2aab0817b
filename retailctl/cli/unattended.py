"""Running unattended: the schedule files for this install, and bronze housekeeping."""

from __future__ import annotations

import getpass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from retailctl import prune, schedule
from retailctl.cli import console
from retailctl.cli.runner import JsonOption, database_of, run, settings_of
from retailctl.store.lock import pipeline_lock


def _age(text: str) -> timedelta:
    try:
        return prune.parse_age(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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
            result = prune.prune(conn, settings.bronze_location, older_than, dry_run=dry_run)
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
