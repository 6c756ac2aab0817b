"""dbt's own chores on the Gold project: packages and the generated documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retailctl import docs_server, gold, stopping
from retailctl.cli import console
from retailctl.cli.runner import JsonOption, database_of, run, settings_of
from retailctl.errors import Terminated


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
        stopping.handled()  # how the server is meant to end: exit 0
    finally:
        server.server_close()
    console.say("docs server stopped")
