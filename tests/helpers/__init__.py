"""Helpers the test modules share: the real CLI in a child process, databases, bronze files."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from click.testing import Result
from psycopg import sql
from typer.testing import CliRunner

from mock_api import DataConfig, RetailData
from retailctl.bronze_files import NdjsonFile, file_name, partition_dir
from retailctl.cli import app
from retailctl.config import Settings, load_settings
from retailctl.extract import EntityResult
from retailctl.extract import extract as extract_entities
from retailctl.load import LoadResult
from retailctl.load import load as load_files
from retailctl.store.db import open_database

API_KEY = "TEST_KEY_9f8e7d6c"
VERSIONS = [
    "001_meta",
    "002_silver",
    "003_changes",
    "004_changes_meta",
    "005_quarantined_lines",
    "006_run_host",
]  # the files of schema/
APPLIED_ALL = f"applied {len(VERSIONS)} migration(s): {', '.join(VERSIONS)}"
RETAILCTL = [sys.executable, "-m", "retailctl"]
# the source of the finished run several tests start from (conftest's `copy_built`)
SMALL_RUN = DataConfig(sales=600)

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    alive: subprocess.Popen[Any] | None = None,
    interval: float = 0.01,
) -> T:
    """Poll `predicate` until it returns something truthy and return that: tests wait for a
    state, never for a guessed time. Fails naming `what` after `timeout` seconds, or at once
    when the process `alive` ends first (it cannot reach the state any more)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the process exited ({alive.returncode}) before {what}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """The CLI in this process, for what only parses options and prints (no kill, no run).

    `env` is added to this process's environment for the call (the autouse fixture has
    already removed every RETAIL_* setting and moved to a fresh directory).
    """
    return CliRunner().invoke(app, args, env=env, catch_exceptions=False)


def database_url(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextlib.contextmanager
def fresh_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new database on the test server, dropped afterwards: empty, or a copy of `template`
    (a file-level copy: far faster than building the same state again)."""
    name = f"retailctl_test_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("create database {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" template {}").format(sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)
    try:
        yield database_url(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def run_cli(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `retailctl` in a child process, output captured (so not a terminal).

    `env` replaces the environment, but PYTHONPATH is kept: a checkout tested over another
    installed copy runs its own code in the child too.
    """
    if env is not None:
        env = {**python_path(), **env}
    return subprocess.run(
        [*RETAILCTL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def python_path() -> dict[str, str]:
    """PYTHONPATH as the tests run under it, for a child's environment built from scratch."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def cli_resource_dir(name: str, env: dict[str, str] | None = None) -> Path:
    """The `schema` or `dbt` directory the CLI uses when run with `env`: the installed one, which
    need not be this checkout's (a wheel install, a worktree beside an editable install)."""
    code = f"from retailctl.resources import resource_dir; print(resource_dir({name!r}))"
    env = {**python_path(), **env} if env is not None else None  # as run_cli passes it
    found = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return Path(found.stdout.strip())


def retailctl_executable() -> str:
    found = shutil.which("retailctl", path=str(Path(sys.executable).parent))
    assert found, "retailctl console script not installed next to this python"
    return found


def postgres_processes_for(fragment: str) -> list[int]:
    """PIDs of postgres processes whose command line names a path containing `fragment`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if "postgres" in cmdline and fragment in cmdline and status != "Z":
            pids.append(int(entry.name))
    return pids


def settings_for(data_dir: Path, db_url: str, api_url: str, **env: str) -> Settings:
    environ = {
        "RETAIL_DATA_DIR": str(data_dir),
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": api_url,
        "RETAIL_API_KEY": API_KEY,
        **env,
    }
    return load_settings(environ=environ, env_file=data_dir / "no.env")


def extract(settings: Settings, **kwargs: Any) -> list[EntityResult]:
    with open_database(settings) as database:
        return extract_entities(settings, database, **kwargs)


def bronze_rows(data_dir: Path, entity: str, rejected: bool = False) -> list[dict[str, Any]]:
    base = data_dir / "bronze" / ("_rejected" if rejected else "") / entity
    rows = []
    for path in sorted(base.rglob("*.ndjson"), key=lambda p: p.name):
        rows += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return rows


def source_sales(config: DataConfig) -> dict[int, dict[str, Any]]:
    data = RetailData(config)
    return {sale["id"]: sale for sale in (data.sale(k) for k in range(config.sales))}


def cursor_of(db_url: str) -> int | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "select last_sales_id from meta.ingestion_state where source_name = 'sales'"
        ).fetchone()
    return row[0] if row else None


def by_entity(results: list[EntityResult]) -> dict[str, EntityResult]:
    return {result.entity: result for result in results}


CHECKSUM = """
select count(*), md5(coalesce(string_agg(row_text, '|' order by row_text), ''))
from (select ({columns})::text as row_text from silver.{table}) t
"""
BUSINESS_COLUMNS = {
    "customers": "customer_id, emails, phone_numbers, _ingestion_ts, _batch_id",
    "products": "product_sku, description, unit_amount, supplier, _ingestion_ts, _batch_id",
    "sales_customer": "id, datetime, total_amount, customer_id, _ingestion_ts, _batch_id",
    "sales_product": "sale_id, line_no, product_sku, quantity, amount, _ingestion_ts, _batch_id",
}


def checksums(db_url: str, with_loaded_at: bool = False) -> dict[str, tuple[int, str]]:
    result = {}
    with psycopg.connect(db_url) as conn:
        for table, columns in BUSINESS_COLUMNS.items():
            columns += ", _loaded_at" if with_loaded_at else ""
            row = conn.execute(CHECKSUM.format(columns=columns, table=table)).fetchone()
            assert row is not None
            result[table] = (row[0], row[1])
    return result


def load(data_dir: Path, db_url: str, **kwargs: Any) -> LoadResult:
    settings = load_settings(
        environ={
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_API_URL": "http://x",
            "RETAIL_DATA_DIR": str(data_dir),
        },
        env_file=data_dir / "none",
    )
    with open_database(settings) as database:
        return load_files(database, settings.bronze_dir, **kwargs)


def write_bronze(
    data_dir: Path, entity: str, rows: list[dict[str, Any]], moment: datetime | None = None
) -> Path:
    moment = moment or datetime.now(UTC)
    batch = str(uuid.uuid4())
    stamp = {"_ingestion_ts": moment.isoformat(), "_batch_id": batch}
    ndjson = NdjsonFile(partition_dir(data_dir / "bronze", entity, moment), file_name(moment, batch))
    for row in rows:
        ndjson.write({**row, **stamp})
    return ndjson.commit()


PEAK_RSS = Path(__file__).with_name("peak_rss.py")


@dataclass
class Measured:
    """A child retailctl's outcome and the resources it took."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float


def run_measured(args: list[str], env: dict[str, str], timeout: float = 300) -> Measured:
    """Run the real `retailctl` and measure its wall time and its own peak RSS (VmHWM, read by
    the child itself at exit: see peak_rss.py)."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(PEAK_RSS), "retailctl", *args],
            env={**python_path(), **env, "PEAK_RSS_FILE": str(peak_file)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.monotonic() - started
        peak_kb = int(peak_file.read_text())
    return Measured(done.returncode, done.stdout, done.stderr, seconds, peak_kb / 1024)


def tree_bytes(path: Path) -> int:
    """Bytes in the regular files under `path`."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
