"""Connections, the embedded-or-configured database, schema migrations and the run lock."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from retailctl.config import Settings, redact_url
from retailctl.embedded_pg import EmbeddedPostgres
from retailctl.errors import ConfigError, CredentialsRejected, DatabaseUnavailable, LockHeld
from retailctl.resources import resource_dir

CONNECT_TIMEOUT_S = 5
CONNECT_ATTEMPTS = 3
# Two arbitrary constants: the namespace of retailctl's advisory locks.
LOCK_NAMESPACE = 72_616_401
MIGRATION_LOCK_ID = 1
PIPELINE_LOCK_ID = 2
MIGRATION_FILE = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")

_AUTH_FAILURES = ("password authentication failed", "no pg_hba.conf entry", "role \"",
                  "authentication failed", "password is required", "no password supplied")

SCHEMA_MIGRATIONS_DDL = """
create schema if not exists meta;
create table if not exists meta.schema_migrations (
    version text primary key,
    applied_at timestamptz not null default now()
)
"""
LOCK_HOLDER_QUERY = """
select a.application_name, a.backend_start
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.classid = %s and l.objid = %s and l.granted
"""


def connect(url: str, *, autocommit: bool = False, purpose: str = "") -> psycopg.Connection:
    """Connect with a few retries; map failures to the exit codes of DESIGN.md."""
    application_name = f"retailctl {purpose} pid={os.getpid()}".strip()
    delay = 0.5
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name=application_name)
        except psycopg.OperationalError as exc:
            message = _one_line(str(exc))
            if any(marker in message for marker in _AUTH_FAILURES):
                raise CredentialsRejected(
                    f"database credentials rejected ({redact_url(url)}): {message}") from None
            if "database \"" in message and "does not exist" in message:
                raise ConfigError(f"RETAIL_DATABASE_URL: {message}") from None
            if attempt == CONNECT_ATTEMPTS:
                raise DatabaseUnavailable(
                    f"database unreachable at {redact_url(url)}: {message}") from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _one_line(message: str) -> str:
    message = message.removeprefix("connection failed: ")
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def migration_files() -> list[tuple[str, Path]]:
    """The numbered SQL files of schema/, in order."""
    files = []
    for path in sorted(resource_dir("schema").iterdir()):
        match = MIGRATION_FILE.match(path.name)
        if match:
            files.append((path.stem, path))
    return files


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply each migration not yet recorded, each in its own transaction; returns those applied.

    A transaction-scoped advisory lock serialises concurrent commands migrating at once.
    """
    applied_now = []
    with conn.transaction():
        conn.execute(sql.SQL("select pg_advisory_xact_lock(%s, %s)"),
                     (LOCK_NAMESPACE, MIGRATION_LOCK_ID))
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        done = {row[0] for row in conn.execute("select version from meta.schema_migrations")}
        for version, path in migration_files():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())  # a trusted file of this package
                conn.execute("insert into meta.schema_migrations (version) values (%s)", (version,))
            applied_now.append(version)
    return applied_now


@dataclass
class Database:
    """The database a command works on: a configured URL or a running embedded server."""

    url: str
    embedded: bool

    def connect(self, *, autocommit: bool = False, purpose: str = "") -> psycopg.Connection:
        return connect(self.url, autocommit=autocommit, purpose=purpose)


@contextlib.contextmanager
def open_database(settings: Settings, *, run_migrations: bool = True) -> Iterator[Database]:
    """Yield the (migrated) database; an embedded server is joined and left around the block."""
    embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir)
    try:
        url = embedded.start() if embedded else settings.database_url
        assert url is not None
        database = Database(url=url, embedded=embedded is not None)
        if run_migrations:
            with database.connect(autocommit=True, purpose="migrate") as conn:
                migrate(conn)
        yield database
    finally:
        if embedded is not None:
            embedded.stop()


@contextlib.contextmanager
def pipeline_lock(database: Database, holder: str) -> Iterator[psycopg.Connection]:
    """Hold the one-run-at-a-time advisory lock on a dedicated session for the block.

    The lock dies with its connection, so a killed run never leaves it behind.
    """
    conn = database.connect(autocommit=True, purpose=holder)
    try:
        got = conn.execute("select pg_try_advisory_lock(%s, %s)",
                           (LOCK_NAMESPACE, PIPELINE_LOCK_ID)).fetchone()
        if not (got and got[0]):
            who = lock_holder(conn) or "another run"
            raise LockHeld(f"another retailctl run holds the lock: {who}; try again later")
        yield conn
    finally:
        conn.close()


def lock_holder(conn: psycopg.Connection) -> str | None:
    """Who holds the pipeline lock now, for `status`."""
    row = conn.execute(LOCK_HOLDER_QUERY, (LOCK_NAMESPACE, PIPELINE_LOCK_ID)).fetchone()
    return f"{row[0]} (since {row[1]:%Y-%m-%d %H:%M:%S %Z})" if row else None
