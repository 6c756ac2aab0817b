"""The embedded PostgreSQL: shared between commands, adopted after a SIGKILL, never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from mock_api import DataConfig
from retailctl.store.embedded import EmbeddedPostgres
from tests.helpers import (
    API_KEY,
    APPLIED_ALL,
    VERSIONS,
    postgres_processes_for,
    retailctl_executable,
    run_cli,
    wait_until,
)
from tests.helpers.scripted_api import Gate, Reply, Request, ScriptedApi

HOLDER = """
import sys
from pathlib import Path
from retailctl.store.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
print(server.start(), flush=True)
sys.stdin.readline()
server.stop()
"""


@pytest.fixture
def start_holder(embedded_data_dir: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[str], str]]]:
    """Start processes that join the embedded server and wait; each returns with the server URL.
    A holder still running when the test ends is told to stop (before the cluster is deleted)."""
    holders: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], str]:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(embedded_data_dir)],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        holders.append(holder)
        assert holder.stdout is not None
        url = holder.stdout.readline().strip()  # printed once the server is up
        assert url.startswith("postgresql://"), url
        return holder, url

    yield start
    for holder in holders:
        if holder.poll() is None:
            holder.communicate("\n", timeout=60)


def pgdata_of(data_dir: Path) -> str:
    return str(EmbeddedPostgres(data_dir).layout.pgdata)


def wait_gone(pgdata: str, why: str = "the server to stop") -> None:
    """Until no postgres process serves `pgdata`."""
    wait_until(lambda: not postgres_processes_for(pgdata), 30, f"{why} (no postgres left for {pgdata})")


def migrate_cmd(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["--data-dir", str(data_dir), "db", "migrate"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")},
    )


@pytest.fixture
def cluster_of_postgres_17(data_dir: Path) -> Iterator[Path]:
    """A real embedded cluster whose PG_VERSION then says 17, as if the previous major made it."""
    server = EmbeddedPostgres(data_dir)
    server.start()
    server.stop()
    version_file = server.layout.pgdata / "PG_VERSION"
    assert version_file.read_text() == "18\n"
    version_file.write_text("17\n")
    yield server.layout.pgdata
    version_file.write_text("18\n")
    server.destroy()


def test_a_cluster_of_another_major_is_refused_exit_78(cluster_of_postgres_17: Path, data_dir: Path) -> None:
    result = run_cli(
        ["status"],
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "RETAIL_DATA_DIR": str(data_dir),
        },
    )
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        f"embedded PostgreSQL (RETAIL_DATABASE_URL is not set): data in {cluster_of_postgres_17} "
        f"for the data dir {data_dir}",
        f"error: the embedded database in {cluster_of_postgres_17} was created by PostgreSQL 17, but "
        "this retailctl ships PostgreSQL 18, which cannot read it: use a retailctl release that ships "
        "PostgreSQL 17 to run on it or to dump it (pg_dump), or move the directory aside to start an "
        "empty database",
    ]
    assert result.stdout == ""
    assert postgres_processes_for(str(cluster_of_postgres_17)) == [], "no server was started"
    assert (cluster_of_postgres_17 / "PG_VERSION").read_text() == "17\n"


def test_server_is_stopped_when_the_command_ends(embedded_data_dir: Path) -> None:
    result = migrate_cmd(embedded_data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [APPLIED_ALL]
    wait_gone(pgdata_of(embedded_data_dir))
    again = migrate_cmd(embedded_data_dir)  # the data survived the stop
    assert again.stdout.splitlines() == ["schema up to date: no migration to apply"]


def test_server_left_by_a_sigkilled_command_is_adopted_then_stopped(
    embedded_data_dir: Path, start_holder
) -> None:
    holder, _ = start_holder()
    pgdata = pgdata_of(embedded_data_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert postgres_processes_for(pgdata), "the postmaster outlives its SIGKILLed client"

    result = migrate_cmd(embedded_data_dir)
    assert result.returncode == 0, result.stderr
    wait_gone(pgdata, "the next command to stop the server it adopted")


def test_stale_postmaster_pid_does_not_stop_the_next_command(embedded_data_dir: Path, start_holder) -> None:
    holder, _ = start_holder()
    pgdata = pgdata_of(embedded_data_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    for pid in postgres_processes_for(pgdata):
        os.kill(pid, signal.SIGKILL)  # the server dies too, leaving postmaster.pid behind
    wait_gone(pgdata, "the SIGKILLed server to be gone")
    pidfile = Path(pgdata) / "postmaster.pid"
    assert pidfile.exists()
    lines = pidfile.read_text().splitlines()
    lines[0] = str(os.getpid())  # and its PID now belongs to a live, unrelated process
    pidfile.write_text("\n".join(lines) + "\n")

    result = migrate_cmd(embedded_data_dir)
    assert result.returncode == 0, result.stderr
    wait_gone(pgdata)


def test_a_command_ending_does_not_stop_the_server_under_another(
    embedded_data_dir: Path, start_holder
) -> None:
    holder, url = start_holder()
    assert migrate_cmd(embedded_data_dir).returncode == 0
    with psycopg.connect(url) as conn:  # still up for the holder
        assert conn.execute("select count(*) from meta.schema_migrations").fetchone() == (len(VERSIONS),)
    holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    wait_gone(pgdata_of(embedded_data_dir), "the last user to stop the server")


def test_runs_in_crons_bare_environment(tmp_path: Path, embedded_data_dir: Path) -> None:
    """No settings at all, so the data dir is ./data: the fixture's, deleted afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", retailctl_executable(), "db", "migrate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [APPLIED_ALL]
    wait_gone(pgdata_of(embedded_data_dir))


def test_root_never_widens_a_home_directory(tmp_path: Path, embedded_clusters) -> None:
    """As root the cluster lives under /var/lib/retailctl; the data dir's parents keep their modes."""
    private = tmp_path / "private-home"
    private.mkdir(mode=0o700)
    data_dir = embedded_clusters(private / "data")
    modes_before = {p: p.stat().st_mode for p in (private, tmp_path)}
    result = migrate_cmd(data_dir)
    assert result.returncode == 0, result.stderr
    assert {p: p.stat().st_mode for p in modes_before} == modes_before
    if os.geteuid() == 0:
        assert pgdata_of(data_dir).startswith("/var/lib/retailctl/embedded/")


def test_sigterm_rolls_back_stops_the_embedded_server_and_exits_143(
    embedded_data_dir: Path, spawn, gate: Gate
) -> None:
    def hold_page_12(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number == 12:
            gate.hold()  # a chunk (pages 1-8) is durable; pages 9-11 are in the open one
        return None

    with ScriptedApi(hold_page_12, DataConfig(sales=5_000)) as api:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "RETAIL_API_URL": api.url,
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_PAGE_SIZE": "100",
            "RETAIL_DATA_DIR": str(embedded_data_dir),
        }  # no database URL: the embedded server
        victim = spawn(["extract", "--entity", "sales"], env, output=True)
        pgdata = pgdata_of(embedded_data_dir)
        wait_until(
            lambda: gate.held.is_set() and list((embedded_data_dir / "bronze").rglob("*.ndjson")),
            60,
            "the extraction to be mid-work past its first chunk",
            alive=victim,
        )
        victim.send_signal(signal.SIGTERM)
        _, stderr = victim.communicate(timeout=60)
    assert victim.returncode == 143
    assert stderr.splitlines()[-1] == "error: stopped by SIGTERM; the open transaction was rolled back"
    wait_gone(pgdata, "the embedded server to be stopped on the way out")
    assert not list((embedded_data_dir / "bronze").rglob("*.tmp"))


def test_copied_binaries_run_where_the_venv_is_private(tmp_path: Path) -> None:
    """As root with a venv in a 0700 directory, the binaries are copied with their libraries."""
    from retailctl.store.embedded import wheel_bin_dir
    from retailctl.store.provision import copy_binaries

    copied = copy_binaries(wheel_bin_dir(), base_dir=tmp_path)
    assert copied == copy_binaries(wheel_bin_dir(), base_dir=tmp_path)  # copied once
    result = subprocess.run(
        [str(copied / "initdb"), "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("initdb (PostgreSQL) ")
