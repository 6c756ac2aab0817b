"""Migrations and connection failures against a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from retailctl.errors import CredentialsRejected
from retailctl.store.db import connect
from retailctl.store.embedded import EmbeddedPostgres
from retailctl.store.migrations import migrate, migration_files
from tests.helpers import APPLIED_ALL, run_cli

SILVER_AND_META_TABLES = {
    ("meta", "ingestion_state"), ("meta", "loaded_files"), ("meta", "pipeline_runs"),
    ("meta", "schema_migrations"), ("meta", "snapshot_state"), ("meta", "extract_log"),
    ("meta", "gold_state"),
    ("silver", "customers"), ("silver", "products"),
    ("silver", "sales_customer"), ("silver", "sales_product"),
}


def test_migrate_twice_changes_nothing(db_url: str) -> None:
    versions = [version for version, _ in migration_files()]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn) == versions
        first = conn.execute("select version, applied_at from meta.schema_migrations "
                             "order by version").fetchall()
        assert migrate(conn) == []
        second = conn.execute("select version, applied_at from meta.schema_migrations "
                              "order by version").fetchall()
        tables = set(conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('meta', 'silver')").fetchall())
    assert first == second
    assert [row[0] for row in first] == versions
    assert tables == SILVER_AND_META_TABLES


def test_money_is_numeric_and_time_is_timestamptz(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn)
        types = dict(((table, column), data_type) for table, column, data_type in conn.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = 'silver'"))
    assert types["sales_product", "amount"] == "numeric"
    assert types["sales_customer", "total_amount"] == "numeric"
    assert types["products", "unit_amount"] == "numeric"
    assert types["sales_customer", "datetime"] == "timestamp with time zone"
    assert types["customers", "emails"] == "ARRAY"


def test_concurrent_migrations_do_not_collide(db_url: str) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                migrate(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(db_url) as conn:
        count = conn.execute("select count(*) from meta.schema_migrations").fetchone()
    assert count == (len(migration_files()),)


def test_db_migrate_command_reports_then_is_idempotent(db_url: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": db_url}
    first = run_cli(["db", "migrate"], env=env)
    second = run_cli(["db", "migrate"], env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [APPLIED_ALL]
    assert second.stdout.splitlines() == ["schema up to date: no migration to apply"]


def test_unreachable_database_is_one_redacted_line_exit_69() -> None:
    url = "postgresql://etl:s3cretpw@127.0.0.1:1/warehouse"
    result = run_cli(["db", "migrate"], env={"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": url})
    assert result.returncode == 69
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: database unreachable at postgresql://etl:***@127.0.0.1:1/warehouse: ")
    assert "s3cretpw" not in result.stdout + result.stderr


def test_unknown_role_is_exit_77(pg_admin_url: str) -> None:
    url = pg_admin_url.replace("postgresql://postgres", "postgresql://no_such_role:pw1234", 1)
    result = run_cli(["db", "migrate"], env={"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": url})
    assert result.returncode == 77
    assert result.stderr.startswith("error: database credentials rejected (postgresql://no_such_role:***@")
    assert "pw1234" not in result.stderr


@pytest.fixture
def scram_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A server that really checks passwords (scram), deleted after the test."""
    server = EmbeddedPostgres(tmp_path / "scram", password="right-password")
    server.start()
    yield server
    server.destroy()


def test_rejected_password_is_exit_77(scram_server: EmbeddedPostgres) -> None:
    """A server that really checks passwords (scram), given the wrong one."""
    with connect(scram_server.admin_url) as conn:  # the right password works
        assert conn.execute("select 1").fetchone() == (1,)
    wrong = scram_server.admin_url.replace("right-password", "wrong-password")
    with pytest.raises(CredentialsRejected, match="password authentication failed"):
        connect(wrong)
    result = run_cli(["db", "migrate"], env={"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": wrong})
    assert result.returncode == 77
    assert len(result.stderr.splitlines()) == 1
    assert "wrong-password" not in result.stderr
