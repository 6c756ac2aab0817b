"""The command line: the Typer app (`app`), rendering (`render`) and terminal output (`console`)."""

from retailctl.cli.app import app, main

__all__ = ["app", "main"]
