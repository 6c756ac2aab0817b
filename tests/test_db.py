"""Migrations and connection failures against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from retailctl.errors import CredentialsRejected, MigrationError
from retailctl.store.db import connect
from retailctl.store.embedded import EmbeddedPostgres
from retailctl.store.migrations import SCHEMA_MIGRATIONS_DDL, migrate, migration_files
from tests.helpers import APPLIED_ALL, VERSIONS, cli_resource_dir, run_cli

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schema"

SILVER_AND_META_TABLES = {
    ("meta", "ingestion_state"),
    ("meta", "loaded_files"),
    ("meta", "pipeline_runs"),
    ("meta", "schema_migrations"),
    ("meta", "snapshot_state"),
    ("meta", "extract_log"),
    ("meta", "gold_state"),
    ("meta", "sale_hashes"),
    ("meta", "snapshot_files"),
    ("silver", "customers"),
    ("silver", "products"),
    ("silver", "sales_customer"),
    ("silver", "sales_product"),
    ("silver", "sales_changes"),
}


# The indexes Gold's incremental models and `load` rely on: a squash or an edit must keep them.
INDEXES = {
    "meta": {
        "extract_log_extracted_at": "(extracted_at DESC)",
        "extract_log_pkey": "(id)",
        "gold_state_pkey": "(step)",
        "ingestion_state_pkey": "(source_name)",
        "loaded_files_loaded_at": "(loaded_at)",
        "loaded_files_pkey": "(path)",
        "pipeline_runs_pkey": "(run_id)",
        "pipeline_runs_started_at": "(started_at DESC)",
        "schema_migrations_pkey": "(version)",
        "snapshot_state_pkey": "(entity)",
        "sale_hashes_pkey": "(sale_id)",
        "snapshot_files_pkey": "(path)",
    },
    "silver": {
        "customers_loaded_at": "(_loaded_at)",
        "customers_pkey": "(customer_id)",
        "products_loaded_at": "(_loaded_at)",
        "products_pkey": "(product_sku)",
        "sales_customer_customer_id": "(customer_id)",
        "sales_customer_loaded_at": "(_loaded_at)",
        "sales_customer_pkey": "(id)",
        "sales_product_loaded_at": "(_loaded_at)",
        "sales_product_pkey": "(sale_id, line_no)",
        "sales_product_product_sku": "(product_sku)",
        "sales_changes_loaded_at": "(_loaded_at)",
        "sales_changes_sale_id": "(sale_id)",
    },
}
OLD_SCHEMA_MIGRATIONS = """
create schema meta;
create table meta.schema_migrations (version text primary key,
                                     applied_at timestamptz not null default now())
"""
PRE_SQUASH_VERSIONS = [
    "001_meta",
    "002_silver",
    "003_extract_state",
    "004_manifest_stat",
    "005_gold_support",
    "006_gold_state",
    "007_gold_state_started",
    "008_loaded_at_default",
]
RECREATE = (
    "recreate the database (drop and create it; for the embedded server, move its pgdata "
    "directory aside) and run again"
)


def recorded(db_url: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "select version, checksum from meta.schema_migrations order by version"
        ).fetchall()


def test_migration_files_are_the_squashed_schema() -> None:
    assert [version for version, _ in migration_files()] == VERSIONS
    assert [path.name for _, path in migration_files()] == [f"{v}.sql" for v in VERSIONS]


def test_migrate_twice_changes_nothing(db_url: str) -> None:
    versions = VERSIONS
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn) == versions
        first = conn.execute(
            "select version, applied_at from meta.schema_migrations order by version"
        ).fetchall()
        assert migrate(conn) == []
        second = conn.execute(
            "select version, applied_at from meta.schema_migrations order by version"
        ).fetchall()
        tables = set(
            conn.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema in ('meta', 'silver')"
            ).fetchall()
        )
    assert first == second
    assert [row[0] for row in first] == versions
    assert tables == SILVER_AND_META_TABLES


def test_money_is_numeric_and_time_is_timestamptz(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn)
        types = dict(
            ((table, column), data_type)
            for table, column, data_type in conn.execute(
                "select table_name, column_name, data_type from information_schema.columns "
                "where table_schema = 'silver'"
            )
        )
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
    assert count == (len(VERSIONS),)


def test_each_applied_file_is_recorded_with_its_sha256(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn)
    assert recorded(db_url) == [
        (version, hashlib.sha256((SCHEMA_DIR / f"{version}.sql").read_bytes()).hexdigest())
        for version in VERSIONS
    ]


def test_indexes_and_loaded_at_defaults_are_exactly_these(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn)
        rows = conn.execute(
            "select schemaname, indexname, indexdef from pg_indexes where schemaname in ('meta', 'silver')"
        ).fetchall()
        defaults = dict(
            conn.execute(
                "select table_name, column_default from information_schema.columns "
                "where table_schema = 'silver' and column_name = '_loaded_at'"
            ).fetchall()
        )
    indexes: dict[str, dict[str, str]] = {"meta": {}, "silver": {}}
    for schema, name, definition in rows:
        indexes[schema][name] = definition[definition.rindex(" (") :].strip()
    assert indexes == INDEXES
    assert defaults == {
        "customers": None,
        "products": None,
        "sales_customer": "now()",
        "sales_product": "now()",
        "sales_changes": "now()",
    }


def test_bootstrap_table_is_the_one_in_001_meta(db_url: str) -> None:
    """The runner creates meta.schema_migrations before it applies 001: both definitions agree."""
    describe = (
        "select column_name, data_type, is_nullable, column_default, ordinal_position "
        "from information_schema.columns where table_schema = 'meta' "
        "and table_name = 'schema_migrations' order by ordinal_position"
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute((SCHEMA_DIR / "001_meta.sql").read_text())
        from_file = conn.execute(describe).fetchall()
        conn.execute("drop schema meta cascade")
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        from_runner = conn.execute(describe).fetchall()
    assert from_runner == from_file
    assert [column[0] for column in from_file] == ["version", "applied_at", "checksum"]


def test_a_new_migration_file_is_applied_on_top(db_url: str, tmp_path: Path) -> None:
    schema = Path(shutil.copytree(SCHEMA_DIR, tmp_path / "schema"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert migrate(conn, schema) == VERSIONS
        (schema / "999_note.sql").write_text("alter table meta.ingestion_state add column extra text;\n")
        assert migrate(conn, schema) == ["999_note"]
        assert migrate(conn, schema) == []
    assert [version for version, _ in recorded(db_url)] == [*VERSIONS, "999_note"]


def test_an_edited_applied_migration_is_refused(db_url: str, tmp_path: Path) -> None:
    schema = Path(shutil.copytree(SCHEMA_DIR, tmp_path / "schema"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, schema)
        before = recorded(db_url)
        edited = schema / "002_silver.sql"
        edited.write_text(
            edited.read_text() + "create index sales_product_amount on silver.sales_product (amount);\n"
        )
        now = hashlib.sha256(edited.read_bytes()).hexdigest()
        with pytest.raises(MigrationError) as raised:
            migrate(conn, schema)
        has_index = conn.execute(
            "select count(*) from pg_indexes where indexname = 'sales_product_amount'"
        ).fetchone()
    assert str(raised.value) == (
        f"migration 002_silver changed after it was applied to this database ({edited} now has "
        f"sha256 {now[:12]}, the database recorded {before[1][1][:12]}): an applied migration must "
        "not change; reinstall retailctl to restore the shipped file, or undo the edit and put the "
        "change in a new numbered migration"
    )
    assert has_index == (0,)
    assert recorded(db_url) == before


def test_db_migrate_refuses_a_changed_checksum_exit_1(db_url: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": db_url}
    assert run_cli(["db", "migrate"], env=env).returncode == 0
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "update meta.schema_migrations set checksum = %s where version = '001_meta'", ("ab" * 32,)
        )
    result = run_cli(["db", "migrate"], env=env)
    shipped = cli_resource_dir("schema", env) / "001_meta.sql"
    now = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: migration 001_meta changed after it was applied to this database ({shipped} now "
        f"has sha256 {now[:12]}, the database recorded abababababab): an applied migration must "
        "not change; reinstall retailctl to restore the shipped file, or undo the edit and put the "
        "change in a new numbered migration"
    ]


def test_a_pre_squash_database_is_refused_not_migrated_over(db_url: str) -> None:
    """Versions no shipped file knows (the eight files before the squash): recreate, exit 1."""
    with psycopg.connect(db_url) as conn:
        conn.execute(OLD_SCHEMA_MIGRATIONS)
        for version in PRE_SQUASH_VERSIONS:
            conn.execute("insert into meta.schema_migrations (version) values (%s)", (version,))
    result = run_cli(["db", "migrate"], env={"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": db_url})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: this database records migration(s) 003_extract_state, 004_manifest_stat, "
        "005_gold_support, 006_gold_state, 007_gold_state_started, 008_loaded_at_default, which "
        "this retailctl does not ship: another version migrated it (a newer one, or a pre-release "
        f"one from before the migrations were squashed); use that version, or {RECREATE}"
    ]
    with psycopg.connect(db_url) as conn:
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema in ('meta', 'silver')"
        ).fetchone()
        columns = conn.execute(
            "select count(*) from information_schema.columns where table_name = 'schema_migrations'"
        ).fetchone()
    assert tables == (1,), "nothing was applied on top"
    assert columns == (2,), "the refused run rolled back its checksum column too"


def test_versions_recorded_without_checksum_are_refused(db_url: str) -> None:
    """A table from before checksums gets the column; its rows, without one, cannot be trusted."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA_MIGRATIONS)
        conn.execute("insert into meta.schema_migrations (version) values ('001_meta'), ('002_silver')")
        with pytest.raises(MigrationError) as raised:
            migrate(conn)
        conn.execute(SCHEMA_MIGRATIONS_DDL)  # the upgrade of the old table, on its own
    assert str(raised.value) == (
        "this database records migration(s) 001_meta, 002_silver without a checksum: it was made "
        f"by a pre-release retailctl; {RECREATE}"
    )
    assert recorded(db_url) == [("001_meta", None), ("002_silver", None)]


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
    assert lines[0].startswith("error: database unreachable at postgresql://etl:***@127.0.0.1:1/warehouse: ")
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
