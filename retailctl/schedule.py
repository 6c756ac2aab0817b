"""`schedule`: the cron lines, systemd units and logrotate file for this install, filled in;
and what must be true on the host for them to work (next steps, warnings)."""

from __future__ import annotations

import getpass
import grp
import pwd
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT_FILES = ("retailctl.service", "retailctl.timer", "retailctl-prune.service", "retailctl-prune.timer")
TIMERS = ("retailctl.timer", "retailctl-prune.timer")
SYSTEMD_DIR = Path("/etc/systemd/system")
PRIVATE_TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))
LOG_NAME = "retailctl.log"


def executable() -> list[str]:
    """The command of this install's `retailctl` (the script next to its python), absolute."""
    beside = Path(sys.executable).parent / "retailctl"
    found = str(beside) if beside.exists() else shutil.which("retailctl")
    return (
        [str(Path(found).absolute())] if found else [str(Path(sys.executable).absolute()), "-m", "retailctl"]
    )


def default_user() -> str:
    """Who the service runs as: you, unless you are root (then a dedicated user)."""
    user = getpass.getuser()
    return "retailctl" if user == "root" else user


@dataclass(frozen=True)
class Install:
    """What the rendered files point at."""

    workdir: Path  # where the command runs: its ./.env holds the settings
    data_dir: Path
    command: list[str]  # retailctl, with --env-file when the settings are in another file
    user: str

    @classmethod
    def here(
        cls, workdir: Path, data_dir: Path, env_file: Path | None = None, user: str | None = None
    ) -> Install:
        """This install; an env file other than <workdir>/.env is named on the command line."""
        command = executable()
        if env_file is not None and env_file.absolute() != (workdir / ".env").absolute():
            command += ["--env-file", str(env_file.absolute())]
        return cls(workdir.absolute(), data_dir.absolute(), command, user or default_user())

    @property
    def log(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def group(self) -> str:
        """The user's primary group (its own name when the user does not exist yet)."""
        try:
            return grp.getgrgid(pwd.getpwnam(self.user).pw_gid).gr_name
        except KeyError:
            return self.user


def render(name: str, install: Install) -> str:
    return (
        (TEMPLATES / name)
        .read_text()
        .format(
            workdir=install.workdir,
            data_dir=install.data_dir,
            user=install.user,
            group=install.group,
            executable=shlex.join(install.command),
            log=install.log,
            # the crontab is a shell line: every path quoted
            workdir_q=shlex.quote(str(install.workdir)),
            log_q=shlex.quote(str(install.log)),
            log_dir_q=shlex.quote(str(install.log.parent)),
        )
    )


def cron(install: Install) -> str:
    return render("crontab", install)


def logrotate(install: Install) -> str:
    return render("logrotate", install)


def systemd_units(install: Install) -> dict[str, str]:
    return {name: render(name, install) for name in UNIT_FILES}


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def systemd_next_steps(install: Install, written_to: Path | None) -> list[str]:
    """The commands that make the units run: the user, its data dir, the units, the timers."""
    user, data_dir = install.user, install.data_dir
    steps = []
    if not user_exists(user):
        steps.append(
            f"useradd --system --home-dir {shlex.quote(str(data_dir))} --shell /usr/sbin/nologin {user}"
        )
    steps.append(f"mkdir -p {shlex.quote(str(data_dir))} && chown -R {user}: {shlex.quote(str(data_dir))}")
    env_file = install.workdir / ".env"
    if env_file.exists():  # retailctl reads it itself, as the service user
        steps.append(f"chgrp {user} {shlex.quote(str(env_file))} && chmod 640 {shlex.quote(str(env_file))}")
    if written_to is None:
        steps.append(f"save the units above as {SYSTEMD_DIR}/<name>")
    elif written_to.absolute() != SYSTEMD_DIR:
        names = " ".join(shlex.quote(str(written_to / name)) for name in UNIT_FILES)
        steps.append(f"cp {names} {SYSTEMD_DIR}/")
    steps += [
        "systemctl daemon-reload",
        f"systemctl enable --now {' '.join(TIMERS)}",
        "systemctl list-timers 'retailctl*'   # then: journalctl -u retailctl.service",
    ]
    return steps


def systemd_warnings(install: Install, embedded: bool) -> list[str]:
    """Where the units cannot work as written on this host."""
    warnings = []
    if not user_exists(install.user):
        warnings.append(
            f"user {install.user!r} does not exist: create it (next steps) before "
            "the timer starts the service"
        )
    for what, path in (("working directory", install.workdir), ("data dir", install.data_dir)):
        for tmp in PRIVATE_TMP_DIRS:
            if path == tmp or tmp in path.parents:
                warnings.append(
                    f"the {what} {path} is under {tmp}, which PrivateTmp=yes replaces with an "
                    "empty directory for the service: install retailctl and its data elsewhere "
                    "(for example /srv/retailctl)"
                )
    if install.user == "root" and embedded:
        warnings.append(
            "as root the embedded PostgreSQL keeps its data under /var/lib/retailctl, "
            "which ProtectSystem=strict makes read-only: run the service as another "
            "user, or set RETAIL_DATABASE_URL"
        )
    blocked = _closed_directory(Path(install.command[0]), install.user)
    if blocked is not None:
        warnings.append(
            f"{install.user!r} cannot reach {install.command[0]}: {blocked} is closed "
            "to other users; install retailctl where the service user can read it "
            "(for example a venv under /srv/retailctl or /opt)"
        )
    return warnings


def _closed_directory(path: Path, user: str) -> Path | None:
    """The first directory on the way to `path` that `user` cannot traverse, if any."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        account = None
    if account is not None and account.pw_uid == 0:
        return None
    for directory in reversed(path.parents):
        try:
            mode = directory.stat()
        except OSError:
            return directory
        owner = account is not None and mode.st_uid == account.pw_uid
        group = account is not None and mode.st_gid == account.pw_gid
        if not (mode.st_mode & 0o001 or (owner and mode.st_mode & 0o100) or (group and mode.st_mode & 0o010)):
            return directory
    return None
