"""Shared fixtures: a real PostgreSQL (the CI server or an embedded one), real HTTP, the CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mock_api import BackgroundServer, DataConfig, FaultConfig, MockConfig
from retailctl.store.embedded import EmbeddedPostgres
from tests.helpers import API_KEY, RETAILCTL, fresh_database, run_cli
from tests.helpers.scripted_api import Gate


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a non-interactive shell (`pytest &` in a script)
    inherits SIGINT ignored and passes that on to every child: the CLI processes the Ctrl-C
    tests interrupt would never see it. A handler here is reset to the default at exec."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's shell or a .env file (nor an AWS one)."""
    for name in list(os.environ):
        if (name.startswith("RETAIL_") and name != "RETAIL_TEST_DATABASE_URL") or name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server to create test databases on: RETAIL_TEST_DATABASE_URL, else embedded."""
    configured = os.environ.get("RETAIL_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"))
    server.start()
    try:
        yield server.admin_url
    finally:
        server.destroy()


@pytest.fixture
def db_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def reference_db_url(pg_admin_url: str) -> Iterator[str]:
    """A second empty database: where a kill test builds its uninterrupted reference."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def mock_api() -> Iterator[BackgroundServer]:
    """The default mock API over real HTTP on loopback, shared by the session."""
    with BackgroundServer(MockConfig(api_key=API_KEY)) as server:
        yield server


@pytest.fixture
def start_mock() -> Iterator[callable]:  # type: ignore[valid-type]
    """Start a mock API with given data and faults; stopped after the test."""
    servers: list[BackgroundServer] = []

    def start(*, faults: FaultConfig | None = None, **data: object) -> BackgroundServer:
        config = MockConfig(
            data=DataConfig(**data),
            faults=faults or FaultConfig(),  # type: ignore[arg-type]
            api_key=API_KEY,
        )
        server = BackgroundServer(config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def cli_env(db_url: str, data_dir: Path, mock_api: BackgroundServer) -> dict[str, str]:
    """The environment of a configured (non-demo) retailctl."""
    return configured_env(db_url, data_dir, mock_api.url)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start the real CLI in a child process (to signal or kill it); killed if still running
    when the test ends, so a failed assertion never leaves it behind."""
    children: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str], *, output: bool = False) -> subprocess.Popen[str]:
        stream = subprocess.PIPE if output else subprocess.DEVNULL
        child = subprocess.Popen([*RETAILCTL, *args], env=env, stdout=stream, stderr=stream, text=True)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate()


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A gate for a scripted API's requests; opened when the test ends, so no request stays held."""
    held = Gate()
    yield held
    held.open()


@pytest.fixture
def embedded_clusters() -> Iterator[Callable[[Path], Path]]:
    """Register data dirs whose embedded PostgreSQL cluster is stopped and deleted after the test."""
    data_dirs: list[Path] = []

    def track(data_dir: Path) -> Path:
        data_dirs.append(data_dir)
        return data_dir

    yield track
    for data_dir in data_dirs:
        EmbeddedPostgres(data_dir).destroy()


@pytest.fixture
def embedded_data_dir(data_dir: Path, embedded_clusters: Callable[[Path], Path]) -> Path:
    """The data dir, its embedded PostgreSQL cluster stopped and deleted after the test."""
    return embedded_clusters(data_dir)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto in server mode, its own process) on loopback, shared
    by the session: its endpoint URL. Each test takes a fresh bucket on it (`bucket`)."""
    from tests.helpers.s3 import MotoServer

    with MotoServer() as server:
        yield server.url


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """A fresh bucket; the AWS variables that reach it set in this process too (for extract
    or load called in-process). Its `url` is what RETAIL_BRONZE_URL takes."""
    from tests.helpers.s3 import Bucket

    created = Bucket(s3_server).create()
    for name, value in created.env.items():
        monkeypatch.setenv(name, value)
    return created


# -- a pipeline run built once, copied per test ---------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A finished real `run-all` against a mock serving `config`: a template database and its
    data dir, to copy from, and that mock (still serving, so a copy can run again)."""

    config: DataConfig
    admin_url: str
    template: str
    data_dir: Path
    api_url: str


@dataclass(frozen=True)
class BuiltCopy:
    """A test's own copy of a built run: its database, its data dir, the CLI environment."""

    db_url: str
    data_dir: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def built_runs(
    pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[DataConfig], Built]]:
    """One real `run-all` per DataConfig per session (per xdist worker: the tests that share a
    config are in one xdist_group), for tests that start from a finished run rather than test
    the first run itself."""
    built: dict[DataConfig, Built] = {}
    with contextlib.ExitStack() as stack:

        def build(config: DataConfig) -> Built:
            if config not in built:
                template_url = stack.enter_context(fresh_database(pg_admin_url))
                server = stack.enter_context(BackgroundServer(MockConfig(data=config, api_key=API_KEY)))
                data_dir = tmp_path_factory.mktemp("built-data")
                result = run_cli(["run-all"], env=configured_env(template_url, data_dir, server.url))
                assert result.returncode == 0, result.stdout + result.stderr
                template = urlsplit(template_url).path.lstrip("/")
                built[config] = Built(config, pg_admin_url, template, data_dir, server.url)
            return built[config]

        yield build


@pytest.fixture
def copy_built(
    built_runs: Callable[[DataConfig], Built], data_dir: Path
) -> Iterator[Callable[[DataConfig], BuiltCopy]]:
    """The state a real `run-all` against a mock serving `config` leaves, for this test alone:
    the database cloned from the built template, the data dir (bronze, dbt's target) copied
    into this test's `data_dir`; the copy is dropped after the test."""
    with contextlib.ExitStack() as stack:

        def copy(config: DataConfig) -> BuiltCopy:
            built = built_runs(config)
            db_url = stack.enter_context(fresh_database(built.admin_url, template=built.template))
            shutil.copytree(built.data_dir, data_dir, symlinks=True, dirs_exist_ok=True)
            return BuiltCopy(db_url, data_dir, configured_env(db_url, data_dir, built.api_url))

        yield copy


def configured_env(db_url: str, data_dir: Path, api_url: str) -> dict[str, str]:
    """The environment of a configured (non-demo) retailctl, as `cli_env` builds it."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")},
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": api_url,
        "RETAIL_API_KEY": API_KEY,
        "RETAIL_DATA_DIR": str(data_dir),
        "RETAIL_HTTP_RETRIES": "8",
    }
