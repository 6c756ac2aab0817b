"""`schedule`: the cron line and systemd units for this install, filled in."""

from __future__ import annotations

import getpass
import shutil
import sys
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT_FILES = ("retailctl.service", "retailctl.timer")


def executable() -> str:
    """The absolute path of this install's `retailctl` script (next to its python)."""
    beside = Path(sys.executable).parent / "retailctl"
    found = str(beside) if beside.exists() else shutil.which("retailctl")
    return str(Path(found).absolute()) if found else f"{Path(sys.executable).absolute()} -m retailctl"


def default_user() -> str:
    """Who the service runs as: you, unless you are root (then a dedicated user)."""
    user = getpass.getuser()
    return "retailctl" if user == "root" else user


def render(name: str, *, workdir: Path, data_dir: Path, user: str | None = None,
           command: str | None = None) -> str:
    return (TEMPLATES / name).read_text().format(
        workdir=workdir.absolute(), data_dir=data_dir.absolute(),
        user=user or default_user(), executable=command or executable(),
        log=(data_dir / "retailctl.log").absolute())


def cron(workdir: Path, data_dir: Path) -> str:
    return render("crontab", workdir=workdir, data_dir=data_dir)


def systemd_units(workdir: Path, data_dir: Path, user: str | None = None) -> dict[str, str]:
    return {name: render(name, workdir=workdir, data_dir=data_dir, user=user) for name in UNIT_FILES}
