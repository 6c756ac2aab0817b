"""The operator's traps (issue 13): each provoked through the real CLI, as a new user met it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import httpx
import psycopg
import pytest

from mock_api import BackgroundServer
from retailctl import pipeline
from retailctl.store.db import open_database
from retailctl.store.embedded import EmbeddedPostgres, pgdata_dir
from tests.helpers import RETAILCTL, fresh_database, run_cli, settings_for, wait_until

HOLDER = """
import sys
from pathlib import Path
from retailctl.store.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
print(server.start(), flush=True)
sys.stdin.readline()
server.stop()
"""


def configured(db_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a configured retailctl (a database URL, an API URL), nothing else."""
    return {
        "PATH": os.environ["PATH"],
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": "http://127.0.0.1:9",
        "RETAIL_DATA_DIR": str(data_dir),
        **extra,
    }


def bare(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the lock holder: this database's, with its pid and run id -------------------------------


def test_lock_holder_is_the_run_in_this_database_with_pid_and_run_id(
    pg_admin_url: str, db_url: str, data_dir: Path
) -> None:
    """A run in another database of the same server is not the holder; the pid is not empty."""
    with fresh_database(pg_admin_url) as other_url:
        other = configured(other_url, data_dir)
        assert run_cli(["db", "migrate"], env=other).returncode == 0
        settings = settings_for(data_dir, db_url, "http://127.0.0.1:9")
        with (
            open_database(settings) as database,
            pipeline.tracked_run(settings, database, "run-all") as history,
        ):
            since = history.conn.execute(
                "select backend_start from pg_stat_activity where pid = pg_backend_pid()"
            ).fetchone()[0]
            holder = (
                f"run-all run {history.run.run_id} (pid {os.getpid()}, "
                f"since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)"
            )
            mine = configured(db_url, data_dir)

            assert run_cli(["status"], env=other).stdout.splitlines()[1] == "lock: free"
            assert run_cli(["status"], env=mine).stdout.splitlines()[1] == f"lock: {holder}"
            report = json.loads(run_cli(["status", "--json"], env=mine).stdout)
            assert report["lock_holder"] == {
                "command": "run-all",
                "pid": os.getpid(),
                "run_id": history.run.run_id,
                "since": since.astimezone(UTC).isoformat(),
                "host": None,
            }

            blocked = run_cli(["state", "set", "--next-sales-id", "9"], env=mine)
            assert blocked.returncode == 75
            assert blocked.stderr.splitlines() == [
                f"error: another retailctl run holds the lock: {holder}; try again later"
            ]
            free = run_cli(["state", "set", "--next-sales-id", "9"], env=other)
            assert (free.returncode, free.stdout) == (0, "next sales id: 1 -> 9\n")


# -- settings: misspelt names, the env file --------------------------------------------------


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_a_misspelt_setting_is_exit_78_naming_the_closest_name(
    where: str, tmp_path: Path, db_url: str
) -> None:
    """The issue's run: RETAIL_DATABSE_URL with RETAIL_API_URL set would have loaded the real API
    into a throw-away embedded database and exited 0."""
    settings = {"RETAIL_DATABSE_URL": db_url, "RETAIL_API_URL": "http://127.0.0.1:9"}
    env = bare(**settings) if where == "environment" else bare()
    if where == ".env":
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    result = run_cli(["run-all"], env=env, cwd=tmp_path)
    assert result.returncode == 78
    place = "the environment" if where == "environment" else f"the env file {tmp_path}/.env"
    assert result.stderr.splitlines() == [
        f"error: unknown setting RETAIL_DATABSE_URL in {place}: did you mean RETAIL_DATABASE_URL?"
    ]
    assert result.stdout == "" and not (tmp_path / "data").exists()


def test_an_unknown_name_without_a_close_one_points_at_config(tmp_path: Path) -> None:
    result = run_cli(["config"], env=bare(RETAIL_COLOUR="blue"), cwd=tmp_path)
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        "error: unknown setting RETAIL_COLOUR in the environment: `retailctl config` lists the settings"
    ]


def test_names_that_are_not_settings_but_belong_are_accepted(tmp_path: Path) -> None:
    env = bare(
        RETAIL_TEST_DATABASE_URL="postgresql://h/t",
        RETAIL_BENCH_DATABASE_URL="postgresql://h/b",
        RETAIL_DBT_HOST="h",
        RETAIL_DBT_PORT="5432",
    )
    result = run_cli(["config"], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_env_file_precedence_option_then_variable_then_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RETAIL_PAGE_SIZE=100\n")
    (tmp_path / "by-variable.env").write_text("RETAIL_PAGE_SIZE=200\n")
    (tmp_path / "by-option.env").write_text("RETAIL_PAGE_SIZE=300\nRETAIL_HTTP_RETRIES=4\n")

    def page_size(args: list[str], **env: str) -> list[str]:
        result = run_cli([*args, "config"], env=bare(**env), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [
            line
            for line in result.stdout.splitlines()
            if line.startswith(("RETAIL_PAGE_SIZE\t", "env file: "))
        ]

    variable = {"RETAIL_ENV_FILE": str(tmp_path / "by-variable.env")}
    option = ["--env-file", str(tmp_path / "by-option.env")]
    assert page_size([]) == ["RETAIL_PAGE_SIZE\t100\t.env", f"env file: {tmp_path}/.env"]
    assert page_size([], **variable) == [
        "RETAIL_PAGE_SIZE\t200\t.env",
        f"env file: {tmp_path}/by-variable.env",
    ]
    assert page_size(option, **variable) == [
        "RETAIL_PAGE_SIZE\t300\t.env",
        f"env file: {tmp_path}/by-option.env",
    ]
    assert page_size(option, RETAIL_PAGE_SIZE="400") == [
        "RETAIL_PAGE_SIZE\t400\tenvironment",
        f"env file: {tmp_path}/by-option.env",
    ]


def test_an_env_file_works_from_any_directory_with_paths_relative_to_it(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "retail.env").write_text("RETAIL_DATA_DIR=data\nRETAIL_PAGE_SIZE=120\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["--env-file", str(etc / "retail.env"), "config"], env=bare(), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert f"RETAIL_DATA_DIR\t{etc}/data\t.env" in result.stdout.splitlines()
    assert "RETAIL_PAGE_SIZE\t120\t.env" in result.stdout.splitlines()


def test_a_named_env_file_that_does_not_exist_is_exit_78(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RETAIL_PAGE_SIZE=100\n")  # never the fallback for a typo
    by_option = run_cli(["--env-file", "retail.evn", "config"], env=bare(), cwd=tmp_path)
    assert (by_option.returncode, by_option.stderr) == (
        78,
        f"error: --env-file={tmp_path}/retail.evn: no such file\n",
    )
    by_variable = run_cli(["config"], env=bare(RETAIL_ENV_FILE="/etc/retail.evn"), cwd=tmp_path)
    assert (by_variable.returncode, by_variable.stderr) == (
        78,
        "error: RETAIL_ENV_FILE=/etc/retail.evn: no such file\n",
    )


def test_an_env_file_the_user_cannot_read_is_exit_78(tmp_path: Path) -> None:
    """A root-only .env read by a service user: one line, not a PermissionError traceback."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to read as a user without CAP_DAC_OVERRIDE")
    secret = tmp_path / "secret.env"
    secret.write_text("RETAIL_PAGE_SIZE=100\n")
    secret.chmod(0o000)
    drop = "-dac_override,-dac_read_search"
    result = subprocess.run(
        [
            setpriv,
            f"--inh-caps={drop}",
            f"--bounding-set={drop}",
            *RETAILCTL,
            "--env-file",
            str(secret),
            "config",
        ],
        env=bare(**({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        78,
        f"error: cannot read the env file {secret}: Permission denied\n",
    )


# -- the embedded server: said on the first line, and a reset that resets ---------------------


def test_a_run_on_the_embedded_server_says_where_its_data_lives_and_db_reset_deletes_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = bare(RETAIL_DATA_DIR=str(data), RETAIL_API_URL="http://127.0.0.1:9")
    pgdata = pgdata_dir(data)
    if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster is not under ./data at all
        assert str(pgdata).startswith("/var/lib/retailctl/embedded/") and pgdata.name == "pgdata"
    try:
        moved = run_cli(["state", "set", "--next-sales-id", "50"], env=env, cwd=tmp_path)
        assert moved.returncode == 0, moved.stderr
        assert moved.stderr.splitlines() == [
            f"embedded PostgreSQL (RETAIL_DATABASE_URL is not set): data in {pgdata} for the data dir {data}"
        ]
        assert (pgdata / "PG_VERSION").exists()

        unconfirmed = run_cli(["db", "reset"], env=env, cwd=tmp_path)
        assert (unconfirmed.returncode, unconfirmed.stderr) == (
            2,
            "error: db reset deletes the embedded database with all its tables; add --yes to confirm\n",
        )

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(data)],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().startswith("postgresql://")
            busy = run_cli(["db", "reset", "--yes"], env=env, cwd=tmp_path)
        finally:
            holder.communicate("\n", timeout=60)
        assert (busy.returncode, busy.stderr) == (
            75,
            "error: the embedded PostgreSQL is in use by another retailctl command; "
            "try again when it has finished\n",
        )
        assert (pgdata / "PG_VERSION").exists()

        reset = run_cli(["db", "reset", "--yes"], env=env, cwd=tmp_path)
        assert (reset.returncode, reset.stdout) == (
            0,
            f"deleted the embedded database in {pgdata}; the bronze files under {data}/bronze "
            "are kept (the next load reads them again)\n",
        )
        assert not pgdata.exists()
        shown = run_cli(["state", "show"], env=env, cwd=tmp_path)
        assert shown.stdout.splitlines()[0] == "next sales id: 1"

        after_show = run_cli(["db", "reset", "--yes"], env=env, cwd=tmp_path)  # show made one
        assert after_show.returncode == 0, after_show.stderr
        reset_again = run_cli(["db", "reset", "--yes"], env=env, cwd=tmp_path)
        assert reset_again.stdout == f"no embedded database in {pgdata}: nothing to delete\n"
    finally:
        EmbeddedPostgres(data).destroy()


def test_db_reset_never_drops_a_configured_database(db_url: str, data_dir: Path) -> None:
    assert run_cli(["db", "migrate"], env=configured(db_url, data_dir)).returncode == 0
    result = run_cli(["db", "reset", "--yes"], env=configured(db_url, data_dir))
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        "error: db reset deletes only the embedded PostgreSQL, and RETAIL_DATABASE_URL is set: "
        "retailctl never drops a configured database (drop its schemas meta, silver and gold "
        "yourself)"
    ]
    with psycopg.connect(db_url) as conn:  # untouched
        assert conn.execute("select count(*) from meta.schema_migrations").fetchone()[0] > 0


def test_the_demo_banner_names_the_real_database_location(tmp_path: Path) -> None:
    result = run_cli(["extract", "--entity", "products"], env=bare(), cwd=tmp_path)
    try:
        assert result.returncode == 0, result.stderr
        banner = result.stdout.splitlines()[0]
        pgdata, data = pgdata_dir(tmp_path / "data"), tmp_path / "data"
        assert re.fullmatch(
            r"DEMO MODE: no RETAIL_API_URL or RETAIL_DATABASE_URL is set, so this run uses generated "
            r"demo data from the bundled mock API at http://127\.0\.0\.1:\d+ and an embedded "
            rf"PostgreSQL with its data in {re.escape(str(pgdata))} \(bronze files under "
            rf"{re.escape(str(data))}; `retailctl db reset --yes` deletes the database\)",
            banner,
        ), banner
        assert result.stderr == ""  # the banner already said it: no second notice
    finally:
        EmbeddedPostgres(tmp_path / "data").destroy()


# -- commands that answered wrongly or said nothing ------------------------------------------


def test_test_before_transform_says_gold_is_not_built(db_url: str, data_dir: Path) -> None:
    result = run_cli(["test"], env=configured(db_url, data_dir))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: Gold is not built yet (no gold.dim_customer): run `retailctl transform` first, "
        "or `retailctl run-all`"
    ]
    assert result.stdout == ""


def test_load_with_nothing_extracted_says_to_extract_first(db_url: str, data_dir: Path) -> None:
    result = run_cli(["load"], env=configured(db_url, data_dir))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"no bronze files under {data_dir}/bronze: run `retailctl extract` first"
    ]


def test_an_unreachable_api_is_named_by_its_url_never_its_key(db_url: str, data_dir: Path) -> None:
    port = free_port()  # nothing listens there
    env = configured(
        db_url,
        data_dir,
        RETAIL_API_URL=f"http://127.0.0.1:{port}",
        RETAIL_API_KEY="sk-never-shown-42",
        RETAIL_HTTP_RETRIES="2",
    )
    result = run_cli(["extract", "--entity", "products"], env=env)
    assert result.returncode == 69
    assert result.stderr.splitlines() == [
        f"error: GET http://127.0.0.1:{port}/products failed after 2 attempts "
        "(last: ConnectError: [Errno 111] Connection refused)"
    ]
    assert "sk-never-shown-42" not in result.stdout + result.stderr


def test_state_set_names_the_next_id_and_keeps_the_old_flag_as_deprecated(
    db_url: str, data_dir: Path
) -> None:
    env = configured(db_url, data_dir)
    named = run_cli(["state", "set", "--next-sales-id", "42"], env=env)
    assert (named.returncode, named.stdout, named.stderr) == (0, "next sales id: 1 -> 42\n", "")
    old = run_cli(["state", "set", "--last-sales-id", "7"], env=env)
    assert (old.returncode, old.stdout) == (0, "next sales id: 42 -> 7\n")
    assert old.stderr.splitlines() == [
        "warning: --last-sales-id is deprecated: it sets the next sale id to read; use --next-sales-id"
    ]
    assert run_cli(["state", "show"], env=env).stdout.splitlines()[0] == "next sales id: 7"
    for args in ([], ["--next-sales-id", "3", "--last-sales-id", "3"]):
        refused = run_cli(["state", "set", *args], env=env)
        assert refused.returncode == 2
        assert "give the next sale id to read, once" in refused.stderr


# -- pipes: | head, | grep -q -----------------------------------------------------------------


def test_status_into_a_pipe_nobody_reads_ends_quietly(db_url: str, data_dir: Path) -> None:
    """The reader is gone before the first line: every write fails with EPIPE."""
    env = configured(db_url, data_dir)
    assert run_cli(["db", "migrate"], env=env).returncode == 0
    for args in (["status"], ["status", "--json"], ["state", "show"]):
        read_end, write_end = os.pipe()
        child = subprocess.Popen(
            [*RETAILCTL, *args],
            env={**env, **pythonpath()},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(write_end)
        os.close(read_end)  # no reader left
        _, stderr = child.communicate(timeout=60)
        assert (child.returncode, stderr) == (0, ""), args


def test_status_into_head_never_prints_a_traceback(db_url: str, data_dir: Path) -> None:
    """As in the issue: read one line, close the pipe, fifteen times."""
    env = {**configured(db_url, data_dir), **pythonpath()}
    assert run_cli(["db", "migrate"], env=env).returncode == 0
    outcomes = set()
    for _ in range(15):
        child = subprocess.Popen(
            [*RETAILCTL, "status"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline().startswith("next sales id: 1")
        child.stdout.close()
        outcomes.add((child.wait(timeout=60), child.stderr.read()))
        child.stderr.close()
    assert outcomes == {(0, "")}


def pythonpath() -> dict[str, str]:
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


# -- docs --serve -----------------------------------------------------------------------------


def serve_docs(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RETAILCTL, "docs", "--serve", "--port", str(port)],
        env={**env, **pythonpath()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_docs_serve_stops_cleanly_restarts_at_once_and_refuses_a_taken_port(
    db_url: str, data_dir: Path
) -> None:
    env = configured(db_url, data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    expected = [
        f"dbt docs generated in {data_dir}/dbt/target",
        f"serving the docs on {url} (Ctrl-C stops)",
        "docs server stopped",
    ]
    for stop in (signal.SIGINT, signal.SIGTERM):  # the second binds right after the first
        server = serve_docs(env, port)
        wait_until(lambda server=server: answers(url) or server.poll() is not None, 120, "the docs")
        assert server.poll() is None, server.communicate()
        assert httpx.get(url + "catalog.json", timeout=5).status_code == 200
        if stop == signal.SIGINT:  # meanwhile the port is taken: one line, exit 1
            taken = run_cli(["docs", "--serve", "--port", str(port)], env=env)
            assert taken.returncode == 1
            assert taken.stderr.splitlines() == [
                f"error: cannot serve the docs on 127.0.0.1:{port}: the port is in use; "
                "choose another with --port"
            ]
        server.send_signal(stop)
        stdout, stderr = server.communicate(timeout=30)
        assert (server.returncode, stdout.splitlines(), stderr) == (0, expected, ""), stop


# -- the bundled mock's /docs without internet -------------------------------------------------


def test_the_mock_api_docs_page_loads_only_local_assets(mock_api: BackgroundServer) -> None:
    page = httpx.get(f"{mock_api.url}/docs", timeout=10)
    assert page.status_code == 200
    assert re.findall(r"https?://", page.text) == []  # no CDN
    assets = re.findall(r"""(?:href|src)="([^"]+)"|url: '([^']+)'""", page.text)
    paths = sorted(href or url for href, url in assets)
    assert paths == [
        "/docs-assets/favicon.png",
        "/docs-assets/swagger-ui-bundle.js",
        "/docs-assets/swagger-ui.css",
        "/openapi.json",
    ]
    for path in paths:  # no API key needed for the docs
        response = httpx.get(f"{mock_api.url}{path}", timeout=10)
        assert (path, response.status_code) == (path, 200)
        assert len(response.content) > 1000
    assert httpx.get(f"{mock_api.url}/products", timeout=10).status_code == 401  # still guarded
