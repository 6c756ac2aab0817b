"""Secrets in every form a URL allows stay off the screen; a bad URL, a missing privilege or an
uninitialised database is one line with its documented exit code, never a traceback; read-only
commands never create a schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from retailctl.config import redact_url, url_secrets
from tests.helpers import APPLIED_ALL, invoke, run_cli

BASE = {"PATH": "/usr/bin:/bin", "RETAIL_API_URL": "http://127.0.0.1:9"}


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        (parts.scheme, f"{user}@{parts.hostname}:{parts.port}", parts.path, parts.query, parts.fragment)
    )


def schemas(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [
            row[0]
            for row in conn.execute(
                "select nspname from pg_namespace where nspname in ('meta', 'silver', 'gold') order by 1"
            )
        ]


def test_config_redacts_a_password_in_any_form_a_url_allows() -> None:
    env = {
        **BASE,
        "RETAIL_API_KEY": "k-123456",
        "RETAIL_API_URL": "https://etl:api-s3cret@api.example.com:8443/v1",
        "RETAIL_DATABASE_URL": "postgresql://etl:p%40ss-w0rd@db.example.com:5432/warehouse"
        "?password=q-s3cret&sslmode=require",
    }
    result = run_cli(["config"], env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "RETAIL_API_URL\thttps://etl:***@api.example.com:8443/v1\tenvironment" in lines
    assert (
        "RETAIL_DATABASE_URL\tpostgresql://etl:***@db.example.com:5432/warehouse"
        "?password=***&sslmode=require\tenvironment"
    ) in lines
    for secret in ("api-s3cret", "p%40ss-w0rd", "p@ss-w0rd", "q-s3cret", "k-123456"):
        assert secret not in result.stdout + result.stderr


def test_a_connection_error_never_shows_the_password(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://etl:p%40ss-w0rd@127.0.0.1:1/warehouse?password=q-s3cret"
    result = run_cli(
        ["db", "migrate"], env={**BASE, "RETAIL_DATABASE_URL": url, "RETAIL_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 69
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "error: database unreachable at postgresql://etl:***@127.0.0.1:1/warehouse?password=***: "
    )
    for secret in ("p%40ss-w0rd", "p@ss-w0rd", "q-s3cret"):
        assert secret not in result.stdout + result.stderr


def test_redaction_rules() -> None:
    assert (
        redact_url("postgresql://u@h/d?application_name=x&PASSWORD=p&sslpassword=k")
        == "postgresql://u@h/d?application_name=x&PASSWORD=***&sslpassword=***"
    )
    assert redact_url("postgresql://u:pw@h:99999/d") == "postgresql://u:***@h:99999/d"
    assert url_secrets("postgresql://u:a%2Fb@h/d?password=c%20d") == ["a%2Fb", "a/b", "c%20d", "c d"]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"RETAIL_DATABASE_URL": "postgres://"},
            "RETAIL_DATABASE_URL=*** is invalid: names no database: add it as the path, "
            "postgresql://host/<database>",
        ),
        (
            {"RETAIL_DATABASE_URL": "postgresql://etl@db.example.com:99999/warehouse"},
            "RETAIL_DATABASE_URL=*** is invalid: port '99999' is not a number from 1 to 65535",
        ),
        (
            {"RETAIL_DATABASE_URL": "postgresql://etl@db.example.com:abc/warehouse"},
            "RETAIL_DATABASE_URL=*** is invalid: port 'abc' is not a number from 1 to 65535",
        ),
        (
            {"RETAIL_DATABASE_URL": "postgresql://etl@db.example.com/warehouse?sslmode=bogus"},
            "RETAIL_DATABASE_URL=*** is invalid: sslmode 'bogus' is not one of allow, disable, prefer, "
            "require, verify-ca, verify-full",
        ),
        (
            {"RETAIL_DATABASE_URL": "postgresql://etl@db.example.com/warehouse?frobnicate=1"},
            "RETAIL_DATABASE_URL=*** is invalid: not a connection URL libpq accepts (check its "
            "percent-encoding and query parameters)",
        ),
        (
            {"RETAIL_API_URL": "http://api.example.com:99999"},
            "RETAIL_API_URL='http://api.example.com:99999' is invalid: expected an http:// or https:// "
            "URL with a valid port",
        ),
        (
            {"RETAIL_MAX_RESPONSE_MB": "0"},
            "RETAIL_MAX_RESPONSE_MB='0' is invalid: expected a whole number from 1 to 4096",
        ),
    ],
)
@pytest.mark.parametrize("command", [["config"], ["status"], ["extract"]])
def test_a_bad_url_is_one_line_and_exit_78_for_every_command(
    env: dict[str, str], line: str, command: list[str]
) -> None:
    """In-process: the settings are checked before any work, so no child process is needed."""
    result = invoke(command, env={**BASE, **env})
    assert result.exit_code == 78
    assert result.stderr.splitlines() == [f"error: {line}"]


def test_status_never_migrates_and_says_the_database_is_not_initialised(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**BASE, "RETAIL_DATABASE_URL": db_url, "RETAIL_DATA_DIR": str(tmp_path)}
    plain = run_cli(["status"], env=env)
    as_json = run_cli(["status", "--json"], env=env)
    config = run_cli(["config"], env=env)
    assert (plain.returncode, as_json.returncode, config.returncode) == (0, 0, 0)
    assert plain.stdout.splitlines() == [
        "database not initialised; run `retailctl db migrate` or `retailctl run-all`"
    ]
    assert json.loads(as_json.stdout) == {
        "initialised": False,
        "database": "not initialised; run `retailctl db migrate` or `retailctl run-all`",
    }
    assert schemas(db_url) == []

    migrated = run_cli(["db", "migrate"], env=env)
    assert migrated.stdout.splitlines() == [APPLIED_ALL]
    with psycopg.connect(db_url, autocommit=True) as conn:  # as if a newer version's migration
        conn.execute(
            "delete from meta.schema_migrations where version = "
            "(select max(version) from meta.schema_migrations)"
        )
    behind = run_cli(["status"], env=env)
    assert behind.stdout.splitlines() == [
        "database schema not up to date (1 migration(s) pending); run `retailctl db migrate` or "
        "`retailctl run-all`"
    ]
    assert run_cli(["status"], env=env).stdout == behind.stdout  # and it did not migrate it


@pytest.fixture
def plain_role(pg_admin_url: str) -> Iterator[str]:
    """A login role with no privilege beyond CONNECT; dropped afterwards."""
    name = f"retailctl_plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'create role "{name}" login')
    try:
        yield name
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'drop role if exists "{name}"')


def test_a_role_without_the_privileges_it_needs_is_one_line_and_exit_78(
    plain_role: str, db_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    database = urlsplit(db_url).path.lstrip("/")
    env = {**BASE, "RETAIL_DATABASE_URL": with_user(db_url, plain_role), "RETAIL_DATA_DIR": str(tmp_path)}
    advice = (
        "grant it CREATE on the database (for migrations: or run `retailctl db migrate` "
        "once as the owner) and write access to the schemas meta, silver and gold"
    )
    migrate = run_cli(["db", "migrate"], env=env)
    assert migrate.returncode == 78
    assert migrate.stderr.splitlines() == [
        f"error: the database role lacks a privilege: permission denied for database {database}; {advice}"
    ]
    assert schemas(db_url) == []

    assert run_cli(["db", "migrate"], env={**env, "RETAIL_DATABASE_URL": db_url}).returncode == 0
    load = run_cli(["load"], env=env)  # migrated by the owner; this role still may not write
    assert load.returncode == 78
    assert load.stderr.splitlines() == [
        f"error: the database role lacks a privilege: permission denied for schema meta; {advice}"
    ]
