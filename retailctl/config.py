"""Settings, resolved once: command-line option > environment > `.env` > default.

Every setting is declared once in SETTING_SPECS (env name, default, parser), so that
`retailctl config`, validation and redaction all read the same list.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from dotenv import dotenv_values
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from retailctl.errors import ConfigError

REDACTED = "***"
TRIGGERS = ("cli", "cron", "systemd", "airflow", "test", "bench")
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})  # libpq's, in a URL's query
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
LOG_FORMATS = ("text", "json")
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
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
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("expected an http:// or https:// URL with a valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return raw.rstrip("/")


def _postgres_url(raw: str) -> str:
    """A postgresql:// URL libpq accepts, naming its database (a URL without one would use the
    OS user's default database: never what is meant)."""
    if urlsplit(raw).scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql:// URL")
    try:
        params = conninfo_to_dict(raw)
    except ProgrammingError:  # its message may quote the password: not shown
        raise ValueError(
            "not a connection URL libpq accepts (check its percent-encoding and query parameters)"
        ) from None
    if not params.get("dbname"):
        raise ValueError("names no database: add it as the path, postgresql://host/<database>")
    for port in str(params.get("port") or "5432").split(","):
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ValueError(f"sslmode {sslmode!r} is not one of {', '.join(sorted(SSL_MODES))}")
    return raw


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a directory path")
    return Path(raw).expanduser().absolute()


def _bronze_url(raw: str) -> str:
    """A local directory (a path or file://) or s3://bucket[/prefix]; stored as written, a
    path made absolute."""
    if "://" in raw and not raw.startswith("file://"):
        from retailctl.bronze_store import parse_s3_url  # no boto3 import

        parse_s3_url(raw)
        return raw.rstrip("/")
    return str(_path(raw.removeprefix("file://")))


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
    SettingSpec(
        "data_dir",
        "RETAIL_DATA_DIR",
        "./data",
        _path,
        "Bronze files, dbt state and the embedded database live here.",
    ),
    SettingSpec(
        "bronze_url",
        "RETAIL_BRONZE_URL",
        None,
        _bronze_url,
        "Where Bronze lives: a directory, or s3://bucket/prefix (endpoint and credentials from "
        "the AWS_* variables and ~/.aws files); unset = RETAIL_DATA_DIR/bronze.",
    ),
    SettingSpec(
        "database_url",
        "RETAIL_DATABASE_URL",
        None,
        _postgres_url,
        "Postgres URL; unset = embedded PostgreSQL under the data dir.",
        secret=True,
    ),
    SettingSpec(
        "api_url",
        "RETAIL_API_URL",
        None,
        _http_url,
        "Base URL of the retail API; unset (with no database URL) = demo mock API.",
    ),
    SettingSpec(
        "api_key", "RETAIL_API_KEY", None, _text, "Key sent in the Authorization header.", secret=True
    ),
    SettingSpec(
        "page_size",
        "RETAIL_PAGE_SIZE",
        250,
        _positive_int(1000),
        "Records asked for per API page (the original API allows 250).",
    ),
    SettingSpec(
        "http_timeout",
        "RETAIL_HTTP_TIMEOUT",
        30.0,
        _positive_float,
        "Seconds before an API request times out (and is retried).",
    ),
    SettingSpec(
        "http_retries",
        "RETAIL_HTTP_RETRIES",
        6,
        _positive_int(50),
        "Attempts per API request before giving up with exit 69.",
    ),
    SettingSpec(
        "max_sales_per_run",
        "RETAIL_MAX_SALES_PER_RUN",
        0,
        _non_negative_int,
        "Stop extracting sales after this many in one run (0 = no cap).",
    ),
    SettingSpec(
        "sales_lookback",
        "RETAIL_SALES_LOOKBACK",
        5000,
        _non_negative_int,
        "Sale ids before the cursor read again each run, for corrections (0 = none).",
    ),
    SettingSpec(
        "max_response_mb",
        "RETAIL_MAX_RESPONSE_MB",
        64,
        _positive_int(4096),
        "Largest API response body accepted, decoded, in MB (larger: retried, then failed).",
    ),
    SettingSpec(
        "max_snapshot_records",
        "RETAIL_MAX_SNAPSHOT_RECORDS",
        5_000_000,
        _positive_int(1_000_000_000),
        "Most records a customers or products snapshot may hold (and at most twice "
        "its total_items plus a page).",
    ),
    SettingSpec(
        "trigger", "RETAIL_TRIGGER", "cli", _trigger, "Who started the run, recorded in meta.pipeline_runs."
    ),
    SettingSpec(
        "host",
        "RETAIL_HOST",
        None,
        _text,
        "The machine's name recorded with each run in meta.pipeline_runs (unset = its host name).",
    ),
    SettingSpec(
        "log_format",
        "RETAIL_LOG_FORMAT",
        "text",
        _log_format,
        "text, or json: every stderr line one JSON object, for log shippers.",
    ),
    SettingSpec(
        "metrics_file",
        "RETAIL_METRICS_FILE",
        None,
        _file_path,
        "Write Prometheus metrics here after every run (node_exporter textfile, *.prom).",
    ),
    SettingSpec(
        "healthcheck_url",
        "RETAIL_HEALTHCHECK_URL",
        None,
        _http_url,
        "Dead-man's-switch ping URL (healthchecks.io style); its path is a secret.",
        secret=True,
    ),
)
SPECS_BY_NAME = {spec.name: spec for spec in SETTING_SPECS}
ENV_FILE_VARIABLE = "RETAIL_ENV_FILE"
# RETAIL_* names that are not settings but are legitimately in an environment: the env file's
# own variable, the test suite's and the benchmarks' servers, and the variables retailctl sets
# for dbt's profile (RETAIL_DBT_*, see gold.dbt_environment).
NON_SETTING_NAMES = frozenset({ENV_FILE_VARIABLE, "RETAIL_TEST_DATABASE_URL", "RETAIL_BENCH_DATABASE_URL"})
NON_SETTING_PREFIXES = ("RETAIL_DBT_",)


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
    max_response_mb: int
    sales_lookback: int
    max_snapshot_records: int
    trigger: str
    host: str | None = None
    log_format: str = "text"
    metrics_file: Path | None = None
    healthcheck_url: str | None = None
    bronze_url: str | None = None  # None: bronze_dir
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    serving_demo_data: bool = False  # api_url points at a bundled mock started for this command
    env_file: Path | None = None  # the env file read, if any

    @property
    def demo_mode(self) -> bool:
        """Nothing points at real systems: the command starts the bundled mock API."""
        return self.api_url is None and self.database_url is None

    @property
    def bronze_dir(self) -> Path:
        """The local bronze directory (with Bronze in an object store: unused)."""
        if self.bronze_url is not None and not self.bronze_in_object_store:
            return Path(self.bronze_url)
        return self.data_dir / "bronze"

    @property
    def bronze_in_object_store(self) -> bool:
        return self.bronze_url is not None and "://" in self.bronze_url

    @property
    def bronze_location(self) -> str:
        """RETAIL_BRONZE_URL, or the default directory: what `bronze_store.open_bronze` takes."""
        return self.bronze_url if self.bronze_in_object_store else str(self.bronze_dir)  # type: ignore[return-value]

    def require_source(self) -> None:
        """Fail before any work when the source is not configured coherently."""
        if self.api_url is None and self.database_url is not None:
            raise ConfigError(
                "RETAIL_API_URL is not set: with RETAIL_DATABASE_URL set retailctl will not load "
                "demo data into a real warehouse; set RETAIL_API_URL and RETAIL_API_KEY"
            )
        if self.api_url is None:
            raise ConfigError(
                "RETAIL_API_URL is not set: set it (and RETAIL_API_KEY), or run "
                "the command line in demo mode, which starts the bundled mock API"
            )
        if self.api_key is None:
            raise ConfigError("RETAIL_API_KEY is not set: the API at RETAIL_API_URL needs a key")

    def secrets(self) -> list[str]:
        """Values that must never be printed, logged or written (as given and as decoded)."""
        values = [self.api_key or ""]
        # the object store's secrets are the AWS SDK's, read from the environment: never shown
        values += [os.environ.get(name, "") for name in AWS_SECRET_VARIABLES]
        for url in (self.database_url, self.api_url):
            values += url_secrets(url) if url else []
        values = [value for value in values if len(value) >= 3]
        if self.healthcheck_url:  # a token in the path (a UUID): whoever knows it can ping
            token = urlsplit(self.healthcheck_url).path.strip("/")
            values += [token] if len(token) >= MIN_URL_TOKEN else []
        return sorted(set(values), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        return text

    def display_value(self, name: str) -> str:
        value = getattr(self, name)
        if value is None and name == "bronze_url":
            return f"(unset: {self.bronze_dir})"
        if value is None:
            return "(unset)"
        if name in ("database_url", "api_url"):
            return redact_url(value)
        if name == "healthcheck_url":
            return redact_url_path(value)
        if SPECS_BY_NAME[name].secret:
            return REDACTED
        return str(value)


def _userinfo_password(netloc: str) -> str | None:
    userinfo, at, _ = netloc.rpartition("@")
    return userinfo.split(":", 1)[1] if at and ":" in userinfo else None


def url_secrets(url: str) -> list[str]:
    """Every password a URL carries (user:password@, ?password=, ?sslpassword=), as written
    and percent-decoded; libpq reads the query's password over the user info's."""
    parts = urlsplit(url)
    found = [_userinfo_password(parts.netloc) or ""]
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key).lower() in SECRET_PARAMETERS:
            found.append(value)
    return [form for value in found if value for form in (value, unquote(value))]


def redact_url(url: str) -> str:
    """The URL with every password replaced by ***, the rest as written (never parsed into
    numbers: a bad port must not stop a redaction)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if _userinfo_password(netloc) is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{hostport}"
    pairs = parts.query.split("&") if parts.query else []
    for index, pair in enumerate(pairs):
        key = pair.partition("=")[0]
        if unquote(key).lower() in SECRET_PARAMETERS:
            pairs[index] = f"{key}={REDACTED}"
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(pairs), parts.fragment))


def redact_url_path(url: str) -> str:
    """The URL with its path (a ping URL's token) replaced by ***."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{REDACTED}", "", ""))


def load_settings(
    overrides: Mapping[str, Any | None] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> Settings:
    """Resolve every setting once; a bad value or an unknown RETAIL_* name raises ConfigError.

    `env_file` is read when it exists (the CLI passes `choose_env_file`'s answer); without it,
    `choose_env_file` decides.
    """
    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = choose_env_file(None, environ)
    elif not env_file.is_file():
        env_file = None
    file_values = read_env_file(env_file) if env_file is not None else {}
    reject_unknown_names(environ, "the environment")
    reject_unknown_names(file_values, f"the env file {env_file}")
    overrides = overrides or {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SETTING_SPECS:
        override = overrides.get(spec.name)
        if override is not None:
            raw, source = str(override), "option"
        elif environ.get(spec.env, "") != "":
            raw, source = environ[spec.env], "environment"
        elif file_values.get(spec.env, "") != "" and env_file is not None:
            raw, source = file_values[spec.env], ".env"
            if spec.parse is _path or (spec.parse is _bronze_url and "://" not in raw):
                # a relative path in a file is relative to that file
                raw = str(env_file.parent / Path(raw).expanduser())
        else:
            values[spec.name] = _default(spec)
            sources[spec.name] = "default"
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as exc:
            shown = REDACTED if spec.secret else repr(redact_url(raw) if "@" in raw else raw)
            raise ConfigError(f"{spec.env}={shown} is invalid: {exc}") from None
        sources[spec.name] = source
    return Settings(**values, sources=sources, env_file=env_file)


def choose_env_file(option: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The env file to read: the --env-file option, else RETAIL_ENV_FILE, else ./.env if it
    exists (None: no file). A file named by the option or the variable must exist: cron and
    systemd name one file, and a typo there must not mean running on the defaults."""
    if option is not None:
        named, how = option, "--env-file"
    elif environ.get(ENV_FILE_VARIABLE, "") != "":
        named, how = Path(environ[ENV_FILE_VARIABLE]), ENV_FILE_VARIABLE
    else:
        default = Path.cwd() / ".env"
        return default if default.is_file() else None
    named = named.expanduser().absolute()
    if not named.is_file():
        raise ConfigError(f"{how}={named}: no such file")
    return named


def read_env_file(path: Path) -> dict[str, str]:
    try:
        with path.open(encoding="utf-8") as handle:
            return {k: v for k, v in dotenv_values(stream=handle).items() if v is not None}
    except OSError as exc:  # a root-only file read by a service user, most often
        raise ConfigError(f"cannot read the env file {path}: {exc.strerror}") from None


def reject_unknown_names(names: Iterable[str], where: str) -> None:
    """A misspelt setting is an error, not a silent default (RETAIL_DATABSE_URL…)."""
    known = [spec.env for spec in SETTING_SPECS]
    for name in sorted(names):
        if (
            not name.startswith("RETAIL_")
            or name in known
            or name in NON_SETTING_NAMES
            or name.startswith(NON_SETTING_PREFIXES)
        ):
            continue
        # compared without the prefix all share, which would make every name look close
        close = difflib.get_close_matches(
            name.removeprefix("RETAIL_"), [env.removeprefix("RETAIL_") for env in known], n=1
        )
        hint = f"did you mean RETAIL_{close[0]}?" if close else "`retailctl config` lists the settings"
        raise ConfigError(f"unknown setting {name} in {where}: {hint}")


def _default(spec: SettingSpec) -> Any:
    return spec.parse(spec.default) if isinstance(spec.default, str) else spec.default
