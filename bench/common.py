"""Helpers shared by the benchmarks: a mock API process, a scratch database, timed commands."""

from __future__ import annotations

import compileall
import contextlib
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

API_KEY = "BENCH_KEY"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Timed:
    seconds: float
    peak_rss_mb: float
    stdout: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mock_api(sales: int, extra: Sequence[str] = ()) -> Iterator[str]:
    """`retailctl api serve` in its own process, so it never shares a GIL with what we measure."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retailctl",
            "api",
            "serve",
            "--port",
            str(port),
            "--sales",
            str(sales),
            "--api-key",
            API_KEY,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a crowded machine takes long to start it
        while True:
            try:
                httpx.get(url + "/health")
                break
            except httpx.ConnectError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def scratch_database(server_url: str | None = None) -> Iterator[str]:
    """A new empty database on RETAIL_BENCH_DATABASE_URL's server (default: the local one)."""
    server_url = server_url or os.environ.get("RETAIL_BENCH_DATABASE_URL", DEFAULT_SERVER)
    name = f"retailctl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    parts = urlsplit(server_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def run_timed(args: Sequence[str], env: dict[str, str]) -> Timed:
    """Run a command; its wall time and, for `retailctl(...)` commands, its own peak RSS."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = os.path.join(scratch, "peak")
        started = time.perf_counter()
        process = subprocess.run(
            list(args),
            env={**os.environ, **env, "PEAK_RSS_FILE": peak_file},
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}): {process.stderr.strip()}")
        peak = float("nan")
        if os.path.exists(peak_file):
            with open(peak_file) as handle:
                peak = int(handle.read()) / 1024
        return Timed(seconds, peak, process.stdout)


@functools.cache
def _bytecode_compiled() -> None:
    """retailctl's modules compiled, as a wheel install has them: a checkout run with
    PYTHONDONTWRITEBYTECODE set (as on these machines) compiles every module it imports in
    every process (~50 ms of `--version`, more for a command that imports more)."""
    import retailctl

    compileall.compile_dir(os.path.dirname(retailctl.__file__), quiet=1)


def retailctl(*args: str) -> list[str]:
    """The retailctl command line, run under peak_rss.py to measure its own memory."""
    _bytecode_compiled()
    return [sys.executable, os.path.join(os.path.dirname(__file__), "peak_rss.py"), "retailctl", *args]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(title)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>16}")
