"""Connections, and the database a command works on: a configured URL or the embedded server."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from retailctl.bronze_files import ensure_private_dir
from retailctl.config import Settings, redact_url
from retailctl.errors import ConfigError, CredentialsRejected, DatabaseUnavailable, PrivilegeMissing
from retailctl.store.embedded import EmbeddedPostgres
from retailctl.store.lock import application_name
from retailctl.store.migrations import migrate

CONNECT_TIMEOUT_S = 5
CONNECT_ATTEMPTS = 3

_AUTH_FAILURES = (
    "password authentication failed",
    "no pg_hba.conf entry",
    'role "',
    "authentication failed",
    "password is required",
    "no password supplied",
)
# libpq refusing the connection string itself: a setting to fix, not an outage to retry.
_BAD_SETTING = (
    "invalid sslmode value",
    "invalid port number",
    "invalid integer value",
    "invalid connection option",
    "invalid URI",
)


def connect(url: str, *, autocommit: bool = False, purpose: str = "") -> psycopg.Connection:
    """Connect with a few retries; map failures to the exit codes of DESIGN.md."""
    name = application_name(os.getpid(), purpose)
    delay = 0.5
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return psycopg.connect(
                url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S, application_name=name
            )
        except psycopg.OperationalError as exc:
            message = _one_line(str(exc))
            if any(marker in message for marker in _AUTH_FAILURES):
                raise CredentialsRejected(
                    f"database credentials rejected ({redact_url(url)}): {message}"
                ) from None
            if 'database "' in message and "does not exist" in message:
                raise ConfigError(f"RETAIL_DATABASE_URL: {message}") from None
            if any(marker in message for marker in _BAD_SETTING):
                raise ConfigError(f"RETAIL_DATABASE_URL ({redact_url(url)}): {message}") from None
            if attempt == CONNECT_ATTEMPTS:
                raise DatabaseUnavailable(f"database unreachable at {redact_url(url)}: {message}") from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _one_line(message: str) -> str:
    message = message.removeprefix("connection failed: ")
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


@dataclass(frozen=True)
class Database:
    """Where a command's connections go."""

    url: str

    def connect(self, *, autocommit: bool = False, purpose: str = "") -> psycopg.Connection:
        return connect(self.url, autocommit=autocommit, purpose=purpose)


@contextlib.contextmanager
def open_database(settings: Settings, *, run_migrations: bool = True) -> Iterator[Database]:
    """Yield the (migrated) database; an embedded server is joined and left around the block.

    Read-only commands pass run_migrations=False: they never create or change a schema. A
    privilege the role lacks, anywhere in the block, is one line and exit 78.
    """
    embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir)
    if embedded is not None:
        ensure_private_dir(settings.data_dir)  # the cluster's lock and socket live under it
    try:
        url = embedded.start() if embedded else settings.database_url
        assert url is not None
        database = Database(url)
        if run_migrations:
            with database.connect(autocommit=True, purpose="migrate") as conn:
                migrate(conn)
        yield database
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PrivilegeMissing(
            f"the database role lacks a privilege: {_one_line(str(exc))}; grant it CREATE on "
            "the database (for migrations: or run `retailctl db migrate` once as the owner) and "
            "write access to the schemas meta, silver and gold"
        ) from None
    finally:
        if embedded is not None:
            embedded.stop()
