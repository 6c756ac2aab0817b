"""Settings: precedence, validation (exit 78) and redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from retailctl.config import load_settings, redact_url
from retailctl.errors import ConfigError
from tests.helpers import invoke

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_precedence_option_over_environment_over_env_file_over_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RETAIL_PAGE_SIZE=100\nRETAIL_HTTP_TIMEOUT=7\nRETAIL_MAX_SALES_PER_RUN=9\n")
    settings = load_settings(
        overrides={"page_size": 300},
        environ={"RETAIL_PAGE_SIZE": "200", "RETAIL_HTTP_TIMEOUT": "8"},
        env_file=env_file,
    )
    assert (settings.page_size, settings.sources["page_size"]) == (300, "option")
    assert (settings.http_timeout, settings.sources["http_timeout"]) == (8.0, "environment")
    assert (settings.max_sales_per_run, settings.sources["max_sales_per_run"]) == (9, ".env")
    assert (settings.http_retries, settings.sources["http_retries"]) == (6, "default")


def test_defaults_are_demo_mode(tmp_path: Path) -> None:
    settings = load_settings(environ={}, env_file=tmp_path / "missing.env")
    assert settings.demo_mode
    assert settings.page_size == 250
    assert settings.data_dir == Path.cwd() / "data"
    assert settings.api_key is None  # the demo command line supplies the mock's own key


def test_database_without_api_url_refuses_demo_data(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"RETAIL_DATABASE_URL": "postgresql://u@h/db"}, env_file=tmp_path / "none"
    )
    assert not settings.demo_mode
    with pytest.raises(ConfigError, match="RETAIL_API_URL is not set"):
        settings.require_source()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"RETAIL_PAGE_SIZE": "abc"},
            "error: RETAIL_PAGE_SIZE='abc' is invalid: expected a whole number from 1 to 1000",
        ),
        (
            {"RETAIL_PAGE_SIZE": "0"},
            "error: RETAIL_PAGE_SIZE='0' is invalid: expected a whole number from 1 to 1000",
        ),
        (
            {"RETAIL_API_URL": "localhost:4010"},
            "error: RETAIL_API_URL='localhost:4010' is invalid: "
            "expected an http:// or https:// URL with a host",
        ),
        (
            {"RETAIL_DATABASE_URL": "127.0.0.1:5432/db"},
            "error: RETAIL_DATABASE_URL=*** is invalid: expected a postgresql:// URL",
        ),
        (
            {"RETAIL_HTTP_TIMEOUT": "-1"},
            "error: RETAIL_HTTP_TIMEOUT='-1' is invalid: expected a number of seconds greater than 0",
        ),
    ],
)
def test_bad_setting_is_one_line_and_exit_78(env: dict[str, str], line: str) -> None:
    result = invoke(["config"], env=env)
    assert result.exit_code == 78
    assert result.stderr.splitlines() == [line]
    assert "Traceback" not in result.stdout + result.stderr


def test_config_shows_sources_and_redacts_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RETAIL_PAGE_SIZE=120\n")
    env = {
        "RETAIL_API_KEY": "sk-live-abcdef",
        "RETAIL_API_URL": "https://api.example.com",
        "RETAIL_DATABASE_URL": "postgresql://etl:hunter2pw@db.example.com:5432/warehouse",
    }
    result = invoke(["config"], env=env)  # in tmp_path, the autouse fixture's directory
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "RETAIL_API_KEY\t***\tenvironment" in lines
    assert "RETAIL_DATABASE_URL\tpostgresql://etl:***@db.example.com:5432/warehouse\tenvironment" in lines
    assert "RETAIL_PAGE_SIZE\t120\t.env" in lines
    assert "RETAIL_HTTP_TIMEOUT\t30.0\tdefault" in lines
    assert "sk-live-abcdef" not in result.stdout + result.stderr
    assert "hunter2pw" not in result.stdout + result.stderr


def test_option_beats_environment_on_the_command_line(tmp_path: Path) -> None:
    result = invoke(
        ["--data-dir", str(tmp_path / "flag"), "config"], env={"RETAIL_DATA_DIR": "/srv/from-env"}
    )
    assert result.exit_code == 0, result.stderr
    assert f"RETAIL_DATA_DIR\t{tmp_path / 'flag'}\toption" in result.stdout.splitlines()


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert (
        redact_url("postgresql://u:p%40ss@h:5433/d?sslmode=require")
        == "postgresql://u:***@h:5433/d?sslmode=require"
    )
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"
