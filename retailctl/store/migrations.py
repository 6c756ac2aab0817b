"""Numbered SQL migrations from `schema/`, applied once each and recorded in meta."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from psycopg import sql

from retailctl.resources import resource_dir
from retailctl.store.lock import LOCK_NAMESPACE, MIGRATION_LOCK_ID

MIGRATION_FILE = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")

SCHEMA_MIGRATIONS_DDL = """
create schema if not exists meta;
create table if not exists meta.schema_migrations (
    version text primary key,
    applied_at timestamptz not null default now()
)
"""
APPLIED_VERSIONS = "select version from meta.schema_migrations"
RECORD_VERSION = "insert into meta.schema_migrations (version) values (%s)"
TAKE_MIGRATION_LOCK = sql.SQL("select pg_advisory_xact_lock(%s, %s)")


def migration_files() -> list[tuple[str, Path]]:
    """The numbered SQL files of schema/, in order."""
    files = []
    for path in sorted(resource_dir("schema").iterdir()):
        if MIGRATION_FILE.match(path.name):
            files.append((path.stem, path))
    return files


def pending(conn: psycopg.Connection) -> list[str]:
    """The versions not applied yet (every one on a database never migrated); reads only."""
    exists = conn.execute("select to_regclass('meta.schema_migrations')").fetchone()
    done = set() if exists is None or exists[0] is None else {
        row[0] for row in conn.execute(APPLIED_VERSIONS)}
    return [version for version, _ in migration_files() if version not in done]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply each migration not yet recorded, each in its own transaction; returns those applied.

    A schema up to date costs one read and no DDL, so a role without CREATE runs every command
    once the owner has migrated. A transaction-scoped advisory lock serialises concurrent
    commands migrating at once.
    """
    if not pending(conn):
        return []
    applied_now = []
    with conn.transaction():
        conn.execute(TAKE_MIGRATION_LOCK, (LOCK_NAMESPACE, MIGRATION_LOCK_ID))
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        done = {row[0] for row in conn.execute(APPLIED_VERSIONS)}
        for version, path in migration_files():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())  # a trusted file of this package
                conn.execute(RECORD_VERSION, (version,))
            applied_now.append(version)
    return applied_now
