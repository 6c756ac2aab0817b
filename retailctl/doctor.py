"""`doctor`: is this install ready to run? One check per thing a run needs, as `dbt debug` does.

Read-only: the database is opened without migrating, the lock is looked at, not taken. Only
`dbt parse` writes, and only under the data dir (dbt's target/ and logs/).
"""

from __future__ import annotations

import email.utils
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from retailctl import gold
from retailctl.config import Settings
from retailctl.errors import ContractViolation, MigrationError, RetailctlError
from retailctl.extract.source import make_client, parse_page
from retailctl.store.db import Database, open_database
from retailctl.store.lock import lock_holder
from retailctl.store.migrations import RECORDED_VERSIONS, check_recorded, migration_files

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MAX_CLOCK_SKEW_S = 300.0
API_TIMEOUT_S = 10.0
SCHEMAS = ("meta", "silver", "gold")

SERVER = """
select current_setting('server_version'), current_user, current_database(),
       has_database_privilege(current_database(), 'CREATE'),
       coalesce((select rolsuper from pg_roles where rolname = current_user), false)
"""
SCHEMA_OWNERSHIP = """
select nspname, pg_has_role(nspowner, 'USAGE') from pg_namespace where nspname = any(%s)
"""


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail, skip
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(settings: Settings) -> list[Check]:
    """Every check, in the order a run meets them; a failed prerequisite skips what needs it."""
    checks = [check_data_dir(settings.data_dir)]
    api, server_date = check_api(settings)
    checks += [api, check_clock(server_date)]
    checks += _database_checks(settings)
    checks.append(check_dbt(settings))
    return checks


def failed(checks: list[Check]) -> bool:
    return any(check.status == FAIL for check in checks)


def check_data_dir(data_dir: Path) -> Check:
    """Writable, and private: bronze holds customers' emails and phone numbers."""
    if not data_dir.exists():
        parent = next((p for p in data_dir.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Check("data dir", OK, f"{data_dir} does not exist yet; the first run creates it")
        return Check("data dir", FAIL, f"{data_dir} does not exist and {parent} is not writable")
    try:
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        return Check("data dir", FAIL, f"{data_dir} is not writable: {exc.strerror}")
    problems, worst = [], OK
    for path in (data_dir, data_dir / "bronze", data_dir / "dbt" / "profiles"):
        if not path.exists():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o022:
            problems.append(f"{path} is writable by others (mode {mode:04o})")
            worst = FAIL
        elif mode & 0o077:
            problems.append(f"{path} is readable by others (mode {mode:04o})")
            worst = WARN if worst == OK else worst
    if problems:
        return Check("data dir", worst, "; ".join(problems) + f": chmod 700 {data_dir}")
    return Check("data dir", OK, f"{data_dir} writable, mode 0700")


def check_api(settings: Settings) -> tuple[Check, float | None]:
    """One page of /products?limit=1: reachable, the key accepted, the contract's shape. Also
    returns the server's clock (its Date header, epoch seconds)."""
    try:
        settings.require_source()
    except RetailctlError as exc:
        return Check("api", FAIL, str(exc)), None
    assert settings.api_url is not None and settings.api_key is not None
    timeout = min(API_TIMEOUT_S, settings.http_timeout)
    try:
        with make_client(settings.api_url, settings.api_key, timeout) as client:
            response = client.get("/products", params={"limit": 1})
    except httpx.HTTPError as exc:
        return Check("api", FAIL, f"{settings.api_url} unreachable: {type(exc).__name__}: {exc}"), None
    server_date = _date_of(response)
    if response.status_code in (401, 403):
        return Check(
            "api",
            FAIL,
            f"{settings.api_url} rejected the key (HTTP {response.status_code}): check RETAIL_API_KEY",
        ), server_date
    if response.status_code != 200:
        return Check(
            "api", FAIL, f"GET {settings.api_url}/products answered HTTP {response.status_code}"
        ), server_date
    try:
        page = parse_page("/products", response.content)
    except ContractViolation as exc:
        return Check("api", FAIL, str(exc)), server_date
    total = f", {page.total_items} products" if page.total_items is not None else ""
    return Check("api", OK, f"{settings.api_url} reachable, key accepted{total}"), server_date


def _date_of(response: httpx.Response) -> float | None:
    value = response.headers.get("date")
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def check_clock(server_date: float | None, now: Callable[[], float] = time.time) -> Check:
    """Timestamps in bronze and the history are this machine's: compare with the API's clock."""
    if server_date is None:
        return Check("clock", SKIP, "the API sent no Date header to compare with")
    skew = now() - server_date
    text = f"{abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the API's clock"
    if abs(skew) > MAX_CLOCK_SKEW_S:
        return Check("clock", WARN, f"{text}: check NTP on this host")
    return Check("clock", OK, text)


def _database_checks(settings: Settings) -> list[Check]:
    try:
        with open_database(settings, run_migrations=False) as database:
            return check_database(database)
    except RetailctlError as exc:
        return [
            Check("database", FAIL, str(exc)),
            Check("migrations", SKIP, "no database"),
            Check("lock", SKIP, "no database"),
        ]


def check_database(database: Database) -> list[Check]:
    with database.connect(autocommit=True, purpose="doctor") as conn:
        return [_server(conn), check_migrations(conn), _lock(conn)]


def _server(conn: psycopg.Connection) -> Check:
    """The server's version, and that retailctl may create or owns its schemas."""
    version, user, dbname, can_create, superuser = conn.execute(SERVER).fetchone()  # type: ignore[misc]
    owned = dict(conn.execute(SCHEMA_OWNERSHIP, (list(SCHEMAS),)).fetchall())
    lacking = [name for name in SCHEMAS if not superuser and not owned.get(name, can_create)]
    where = f"PostgreSQL {version}, database {dbname} as {user}"
    if lacking:
        return Check(
            "database",
            FAIL,
            f"{where}: cannot create or change schema(s) "
            f"{', '.join(lacking)}: grant CREATE on database {dbname} to {user}, "
            "or make it the owner of those schemas",
        )
    how = "superuser" if superuser else "owns or may create schemas meta, silver, gold"
    return Check("database", OK, f"{where} ({how})")


def check_migrations(conn: psycopg.Connection) -> Check:
    """Recorded migrations against this version's files (checksums included), applying none."""
    migrations = migration_files()
    sources = {migration.version: migration.path.read_bytes() for migration in migrations}
    exists = conn.execute("select to_regclass('meta.schema_migrations')").fetchone()
    recorded: dict[str, str | None] = {}
    try:
        if exists and exists[0]:
            recorded = dict(conn.execute(RECORDED_VERSIONS).fetchall())
        check_recorded(recorded, migrations, sources)
    except psycopg.errors.UndefinedColumn:  # a table from before checksums were recorded
        return Check(
            "migrations",
            FAIL,
            "meta.schema_migrations has no checksums: the database was made by a pre-release retailctl",
        )
    except MigrationError as exc:
        return Check("migrations", FAIL, str(exc))
    pending = [migration.version for migration in migrations if migration.version not in recorded]
    if pending:
        return Check(
            "migrations",
            WARN,
            f"{len(pending)} of {len(migrations)} pending "
            f"({', '.join(pending)}): the next command applies them "
            "(or `retailctl db migrate`)",
        )
    return Check("migrations", OK, f"all {len(migrations)} applied (latest {migrations[-1].version})")


def _lock(conn: psycopg.Connection) -> Check:
    holder = lock_holder(conn)
    return Check("lock", OK, "free" if holder is None else f"held by {holder}: a run is in progress")


def check_dbt(settings: Settings) -> Check:
    """`dbt parse`: the project and its profile are valid (no database needed)."""
    try:
        result = gold.parse(settings, "postgresql://doctor@localhost/doctor")
    except RetailctlError as exc:
        return Check("dbt", FAIL, str(exc))
    if not result.success:
        return Check("dbt", FAIL, f"dbt parse failed: see the log under {settings.data_dir}/dbt/logs")
    return Check("dbt", OK, f"project {gold.DbtPaths.for_settings(settings).project} parses")
