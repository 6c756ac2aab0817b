"""Settings, resolved once: command-line option > environment > `.env` > default.

Every setting is declared once in SETTING_SPECS (env name, default, parser), so that
`retailctl config`, validation and redaction all read the same list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from retailctl.errors import ConfigError

REDACTED = "***"
TRIGGERS = ("cli", "cron", "systemd", "airflow", "test", "bench")
LOG_FORMATS = ("text", "json")
MIN_URL_TOKEN = 16  # a shorter ping URL path is a word, not a token: redacting it would garble text


def _positive_int(maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 1 <= value <= maximum:
            raise ValueError(f"expected a whole number from 1 to {maximum}")
        return value

    return parse


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError("expected a whole number, 0 or more (0 = no cap)")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < 86_400:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return raw.rstrip("/")


def _postgres_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql:// URL")
    return raw


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a directory path")
    return Path(raw).expanduser().absolute()


def _file_path(raw: str) -> Path:
    if not raw.strip() or raw.endswith("/"):
        raise ValueError("expected a file path")
    return Path(raw).expanduser().absolute()


def _log_format(raw: str) -> str:
    if raw not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}")
    return raw


def _trigger(raw: str) -> str:
    if raw not in TRIGGERS:
        raise ValueError(f"expected one of {', '.join(TRIGGERS)}")
    return raw


def _text(raw: str) -> str:
    if not raw:
        raise ValueError("expected a non-empty value")
    return raw


@dataclass(frozen=True)
class SettingSpec:
    name: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


SETTING_SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("data_dir", "RETAIL_DATA_DIR", "./data", _path,
                "Bronze files, dbt state and the embedded database live here."),
    SettingSpec("database_url", "RETAIL_DATABASE_URL", None, _postgres_url,
                "Postgres URL; unset = embedded PostgreSQL under the data dir.", secret=True),
    SettingSpec("api_url", "RETAIL_API_URL", None, _http_url,
                "Base URL of the retail API; unset (with no database URL) = demo mock API."),
    SettingSpec("api_key", "RETAIL_API_KEY", None, _text,
                "Key sent in the Authorization header.", secret=True),
    SettingSpec("page_size", "RETAIL_PAGE_SIZE", 250, _positive_int(1000),
                "Records asked for per API page (the original API allows 250)."),
    SettingSpec("http_timeout", "RETAIL_HTTP_TIMEOUT", 30.0, _positive_float,
                "Seconds before an API request times out (and is retried)."),
    SettingSpec("http_retries", "RETAIL_HTTP_RETRIES", 6, _positive_int(50),
                "Attempts per API request before giving up with exit 69."),
    SettingSpec("max_sales_per_run", "RETAIL_MAX_SALES_PER_RUN", 0, _non_negative_int,
                "Stop extracting sales after this many in one run (0 = no cap)."),
    SettingSpec("trigger", "RETAIL_TRIGGER", "cli", _trigger,
                "Who started the run, recorded in meta.pipeline_runs."),
    SettingSpec("log_format", "RETAIL_LOG_FORMAT", "text", _log_format,
                "text, or json: every stderr line one JSON object, for log shippers."),
    SettingSpec("metrics_file", "RETAIL_METRICS_FILE", None, _file_path,
                "Write Prometheus metrics here after every run (node_exporter textfile, *.prom)."),
    SettingSpec("healthcheck_url", "RETAIL_HEALTHCHECK_URL", None, _http_url,
                "Dead-man's-switch ping URL (healthchecks.io style); its path is a secret.",
                secret=True),
)
SPECS_BY_NAME = {spec.name: spec for spec in SETTING_SPECS}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None
    api_url: str | None
    api_key: str | None
    page_size: int
    http_timeout: float
    http_retries: int
    max_sales_per_run: int
    trigger: str
    log_format: str = "text"
    metrics_file: Path | None = None
    healthcheck_url: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    serving_demo_data: bool = False  # api_url points at a bundled mock started for this command

    @property
    def demo_mode(self) -> bool:
        """Nothing points at real systems: the command starts the bundled mock API."""
        return self.api_url is None and self.database_url is None

    @property
    def bronze_dir(self) -> Path:
        return self.data_dir / "bronze"

    def require_source(self) -> None:
        """Fail before any work when the source is not configured coherently."""
        if self.api_url is None and self.database_url is not None:
            raise ConfigError(
                "RETAIL_API_URL is not set: with RETAIL_DATABASE_URL set retailctl will not load "
                "demo data into a real warehouse; set RETAIL_API_URL and RETAIL_API_KEY"
            )
        if self.api_url is None:
            raise ConfigError("RETAIL_API_URL is not set: set it (and RETAIL_API_KEY), or run "
                              "the command line in demo mode, which starts the bundled mock API")
        if self.api_key is None:
            raise ConfigError("RETAIL_API_KEY is not set: the API at RETAIL_API_URL needs a key")

    def secrets(self) -> list[str]:
        """Values that must never be printed, logged or written."""
        values = [self.api_key or ""]
        if self.database_url:
            values.append(urlsplit(self.database_url).password or "")
        values = [value for value in values if len(value) >= 3]
        if self.healthcheck_url:  # a token in the path (a UUID): whoever knows it can ping
            token = urlsplit(self.healthcheck_url).path.strip("/")
            values += [token] if len(token) >= MIN_URL_TOKEN else []
        return values

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        return text

    def display_value(self, name: str) -> str:
        value = getattr(self, name)
        if value is None:
            return "(unset)"
        if name == "database_url":
            return redact_url(value)
        if name == "healthcheck_url":
            return redact_url_path(value)
        if SPECS_BY_NAME[name].secret:
            return REDACTED
        return str(value)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_url_path(url: str) -> str:
    """The URL with its path (a ping URL's token) replaced by ***."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{REDACTED}", "", ""))


def load_settings(
    overrides: Mapping[str, Any | None] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> Settings:
    """Resolve every setting once; a bad value raises ConfigError naming the setting."""
    environ = os.environ if environ is None else environ
    env_file = Path.cwd() / ".env" if env_file is None else env_file
    file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} \
        if env_file.is_file() else {}
    overrides = overrides or {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SETTING_SPECS:
        override = overrides.get(spec.name)
        if override is not None:
            raw, source = str(override), "option"
        elif environ.get(spec.env, "") != "":
            raw, source = environ[spec.env], "environment"
        elif file_values.get(spec.env, "") != "":
            raw, source = file_values[spec.env], ".env"
        else:
            values[spec.name] = _default(spec)
            sources[spec.name] = "default"
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as exc:
            shown = REDACTED if spec.secret else repr(raw)
            raise ConfigError(f"{spec.env}={shown} is invalid: {exc}") from None
        sources[spec.name] = source
    return Settings(**values, sources=sources)


def _default(spec: SettingSpec) -> Any:
    return spec.parse(spec.default) if isinstance(spec.default, str) else spec.default
