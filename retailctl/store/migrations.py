"""Numbered SQL migrations from `schema/`, applied once each and recorded in meta with a checksum.

An applied file is never applied again, so one that changed afterwards would be silently
ignored: its recorded sha256 catches that. Versions recorded that no shipped file knows mean a
database made by another (pre-release) version: refused, never migrated over.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

import psycopg
from psycopg import sql

from retailctl.errors import MigrationError
from retailctl.resources import resource_dir
from retailctl.store.lock import LOCK_NAMESPACE, MIGRATION_LOCK_ID

MIGRATION_FILE = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")

# The same table as in schema/001_meta.sql (created first here: the runner reads it before it
# applies anything). The `alter` upgrades a table made before checksums were recorded.
SCHEMA_MIGRATIONS_DDL = """
create schema if not exists meta;
create table if not exists meta.schema_migrations (
    version    text primary key,
    applied_at timestamptz not null default now(),
    checksum   text
);
alter table meta.schema_migrations add column if not exists checksum text
"""
RECORDED_VERSIONS = "select version, checksum from meta.schema_migrations order by version"
# Reads only: does meta.schema_migrations exist, with its checksum column? (pg_catalog, not
# information_schema: its views cost ~5 ms of every command's start)
PROBE_RECORDED = """
select to_regclass('meta.schema_migrations') is not null,
       exists (select from pg_attribute where attrelid = to_regclass('meta.schema_migrations')
               and attname = 'checksum' and not attisdropped)
"""
RECORDED_VERSIONS_UNCHECKED = "select version, null from meta.schema_migrations order by version"
RECORD_VERSION = "insert into meta.schema_migrations (version, checksum) values (%s, %s)"
TAKE_MIGRATION_LOCK = sql.SQL("select pg_advisory_xact_lock(%s, %s)")
RECREATE = (
    "recreate the database (drop and create it; for the embedded server, move its pgdata "
    "directory aside) and run again"
)


class Migration(NamedTuple):
    """One file of schema/: `001_meta` and its path."""

    version: str
    path: Path


def migration_files(directory: Path | None = None) -> list[Migration]:
    """The numbered SQL files of `directory` (default: the shipped schema/), in order."""
    directory = directory or resource_dir("schema")
    return [
        Migration(path.stem, path) for path in sorted(directory.iterdir()) if MIGRATION_FILE.match(path.name)
    ]


def checksum(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def recorded_versions(conn: psycopg.Connection) -> dict[str, str | None] | None:
    """The versions (and checksums) the database records, read only; None before any."""
    table, with_checksum = conn.execute(PROBE_RECORDED).fetchone()  # type: ignore[misc]
    if not table:
        return None
    return dict(conn.execute(RECORDED_VERSIONS if with_checksum else RECORDED_VERSIONS_UNCHECKED).fetchall())


def pending(conn: psycopg.Connection, directory: Path | None = None) -> list[str]:
    """The shipped versions not applied yet (every one on a database never migrated)."""
    recorded = recorded_versions(conn) or {}
    return [version for version, _ in migration_files(directory) if version not in recorded]


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[str]:
    """Check the recorded migrations, then apply each one not yet recorded, each in its own
    transaction; returns those applied.

    A schema up to date is checked with reads only (no DDL, no lock), so a role without CREATE
    runs every command once the owner has migrated. A transaction-scoped advisory lock
    serialises concurrent commands migrating at once.
    """
    migrations = migration_files(directory)
    sources = {migration.version: migration.path.read_bytes() for migration in migrations}
    recorded = recorded_versions(conn)
    if recorded is not None and all(version in recorded for version, _ in migrations):
        check_recorded(recorded, migrations, sources)
        return []
    applied_now = []
    with conn.transaction():
        conn.execute(TAKE_MIGRATION_LOCK, (LOCK_NAMESPACE, MIGRATION_LOCK_ID))
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        recorded: dict[str, str | None] = dict(conn.execute(RECORDED_VERSIONS).fetchall())
        check_recorded(recorded, migrations, sources)
        for version, _ in migrations:
            if version in recorded:
                continue
            with conn.transaction():
                conn.execute(sources[version].decode())  # a trusted file of this package
                conn.execute(RECORD_VERSION, (version, checksum(sources[version])))
            applied_now.append(version)
    return applied_now


def check_recorded(
    recorded: dict[str, str | None], migrations: list[Migration], sources: dict[str, bytes]
) -> None:
    """Raise MigrationError unless every recorded version is a shipped file, unchanged."""
    unknown = [version for version in recorded if version not in sources]
    if unknown:
        raise MigrationError(
            f"this database records migration(s) {', '.join(unknown)}, which this retailctl does "
            "not ship: another version migrated it (a newer one, or a pre-release one from before "
            f"the migrations were squashed); use that version, or {RECREATE}"
        )
    unchecked = [version for version, recorded_sum in recorded.items() if recorded_sum is None]
    if unchecked:
        raise MigrationError(
            f"this database records migration(s) {', '.join(unchecked)} without a checksum: it was "
            f"made by a pre-release retailctl; {RECREATE}"
        )
    for version, path in migrations:
        if version in recorded and recorded[version] != (now := checksum(sources[version])):
            raise MigrationError(
                f"migration {version} changed after it was applied to this database ({path} now "
                f"has sha256 {now[:12]}, the database recorded {str(recorded[version])[:12]}): an "
                "applied migration must not change; reinstall retailctl to restore the shipped "
                "file, or undo the edit and put the change in a new numbered migration"
            )
