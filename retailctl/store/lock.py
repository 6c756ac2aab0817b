"""The one-run-at-a-time advisory lock, and who holds it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg

from retailctl.errors import LockHeld

if TYPE_CHECKING:  # db imports migrations, which take the migration lock defined here
    from retailctl.store.db import Database

# Two arbitrary constants: the namespace of retailctl's advisory locks.
LOCK_NAMESPACE = 72_616_401
MIGRATION_LOCK_ID = 1
PIPELINE_LOCK_ID = 2

TRY_LOCK = "select pg_try_advisory_lock(%s, %s)"
LOCK_HOLDER_QUERY = """
select a.application_name, a.backend_start
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.classid = %s and l.objid = %s and l.granted
"""


@contextlib.contextmanager
def pipeline_lock(database: Database, holder: str) -> Iterator[psycopg.Connection]:
    """Hold the one-run-at-a-time advisory lock on a dedicated session for the block.

    The lock dies with its connection, so a killed run never leaves it behind.
    """
    conn = database.connect(autocommit=True, purpose=holder)
    try:
        got = conn.execute(TRY_LOCK, (LOCK_NAMESPACE, PIPELINE_LOCK_ID)).fetchone()
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
