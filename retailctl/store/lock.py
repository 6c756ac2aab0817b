"""The one-run-at-a-time advisory lock, and who holds it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
# Advisory locks belong to one database: a run in another database on the same server is not
# the holder. The run id comes from the history row the holder started on its lock session
# (application_name is cut at 63 bytes, too short for it).
LOCK_HOLDER_QUERY = """
select a.application_name, a.backend_start, host(a.client_addr)
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted
  and l.database = (select oid from pg_database where datname = current_database())
  and l.classid = %s and l.objid = %s and l.objsubid = 2
"""
# A database not migrated yet (doctor, status) has no history to name the run from.
HOLDER_RUN_ID = """
select r.run_id::text from meta.pipeline_runs r
where r.status = 'running' and r.started_at >= %s
order by r.started_at desc limit 1
"""
HAS_HISTORY = "select to_regclass('meta.pipeline_runs') is not null"
# What db.connect() puts in application_name: the client pid first, so truncation never cuts it.
APPLICATION_NAME = re.compile(r"^retailctl pid=(\d+)(?: (.*))?$")
LOCAL_ADDRESSES = (None, "127.0.0.1", "::1")


@dataclass(frozen=True)
class LockHolder:
    """The session holding the pipeline lock, as on-call needs it: what, which process, since."""

    command: str
    pid: int | None  # the retailctl process (on `host` when that is not this machine)
    run_id: str | None  # the meta.pipeline_runs row of a tracked run
    since: datetime
    host: str | None = None

    def describe(self) -> str:
        run = f" run {self.run_id}" if self.run_id else ""
        where = f" on {self.host}" if self.host else ""
        pid = f"pid {self.pid}{where}, " if self.pid is not None else ""
        return f"{self.command}{run} ({pid}since {self.since:%Y-%m-%d %H:%M:%S} UTC)"


def application_name(pid: int, purpose: str) -> str:
    return f"retailctl pid={pid} {purpose}".strip()


@contextlib.contextmanager
def pipeline_lock(database: Database, holder: str) -> Iterator[psycopg.Connection]:
    """Hold the one-run-at-a-time advisory lock on a dedicated session for the block.

    The lock dies with its connection, so a killed run never leaves it behind.
    """
    conn = database.connect(autocommit=True, purpose=holder)
    try:
        got = conn.execute(TRY_LOCK, (LOCK_NAMESPACE, PIPELINE_LOCK_ID)).fetchone()
        if not (got and got[0]):
            found = lock_holder(conn)
            who = found.describe() if found else "another run"
            raise LockHeld(f"another retailctl run holds the lock: {who}; try again later")
        yield conn
    finally:
        conn.close()


def lock_holder(conn: psycopg.Connection) -> LockHolder | None:
    """Who holds the pipeline lock of this database now (None: nobody)."""
    row = conn.execute(LOCK_HOLDER_QUERY, (LOCK_NAMESPACE, PIPELINE_LOCK_ID)).fetchone()
    if row is None:
        return None
    name, backend_start, address = row
    run_id = None
    if conn.execute(HAS_HISTORY).fetchone() == (True,):
        found = conn.execute(HOLDER_RUN_ID, (backend_start,)).fetchone()
        run_id = found[0] if found else None
    match = APPLICATION_NAME.match(name or "")
    command = (match.group(2) or "retailctl") if match else (name or "unknown session")
    return LockHolder(
        command=command,
        pid=int(match.group(1)) if match else None,
        run_id=run_id,
        since=backend_start.astimezone(UTC),
        host=None if address in LOCAL_ADDRESSES else address,
    )
