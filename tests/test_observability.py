"""Seeing the work and observing it from outside: live progress on a real terminal, --json,
--quiet/--verbose, JSON logs, `doctor`, the Prometheus textfile and the healthcheck pings.

Real CLI in child processes, real Postgres, the mock API and scripted HTTP servers on loopback.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer.main
from prometheus_client.parser import text_string_to_metric_families

from retailctl.cli import app
from tests.helpers import API_KEY, RETAILCTL, SMALL_RUN, VERSIONS, invoke, run_cli

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")
TALLY = re.compile(
    r"run ([0-9a-f-]{36}) \(cli\) succeeded in [\d.]+s: 4 steps; rows: bronze "
    r"\+([\d,]+), silver \+([\d,]+), gold \+([\d,]+); tests: (\d+) passed, 0 failed"
)
IDLE_TALLY = re.compile(
    r"run [0-9a-f-]{36} \(cli\) succeeded in [\d.]+s: 4 steps \(2 skipped\); "
    r"rows: bronze \+0, silver \+0, gold \+0; tests: 0 passed, 0 failed"
)
BAD_KEY = "API key rejected: GET /customers answered HTTP 401; check RETAIL_API_KEY"


def number(text: str) -> int:
    return int(text.replace(",", ""))


def scalar(db_url: str, query: str) -> Any:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchone()[0]  # type: ignore[index]


def silver_total(db_url: str) -> int:
    return scalar(
        db_url,
        "select (select count(*) from silver.customers) + "
        "(select count(*) from silver.products) + "
        "(select count(*) from silver.sales_customer) + "
        "(select count(*) from silver.sales_product)",
    )


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """The real CLI with a pseudo-terminal as its stdout and stderr: what a person sees."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*RETAILCTL, *args],
        env={**env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def lines_of(text: str) -> list[str]:
    return [line.strip() for line in ANSI.sub("", text).replace("\r", "\n").split("\n") if line.strip()]


@pytest.fixture
def small_api(start_mock):  # type: ignore[no-untyped-def]
    return start_mock(sales=300)


@pytest.fixture
def env(cli_env: dict[str, str], small_api) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {**cli_env, "RETAIL_API_URL": small_api.url, "RETAIL_PAGE_SIZE": "50"}


# -- seeing the work -------------------------------------------------------------------------


@pytest.mark.slow  # runs dbt
def test_run_all_on_a_terminal_shows_live_progress_and_closes_with_the_tally(
    env: dict[str, str], db_url: str
) -> None:
    code, output = run_on_terminal(["run-all"], env)
    assert code == 0, output
    shown = lines_of(output)
    # the live display drew each step: sales with its estimate from total_items, load files,
    # dbt nodes counted against dbt's own node count
    assert any(re.search(r"extract sales .*300/300 records 6 pages", line) for line in shown), shown
    assert any(re.search(r"load sales_product .*rows 1/1 files", line) for line in shown), shown
    assert any(re.search(r"transform dbt build .*(\d+)/\1 nodes", line) for line in shown), shown
    assert any(re.search(r"test dbt test .*(\d+)/\1 nodes", line) for line in shown), shown
    tally = TALLY.fullmatch(shown[-1])
    assert tally, shown[-5:]
    total = silver_total(db_url)
    assert number(tally[2]) == number(tally[3]) == total  # the first run writes every row once
    assert number(tally[4]) == scalar(db_url, "select count(*) from gold.sales_item") + scalar(
        db_url, "select count(*) from gold.dim_customer"
    ) + scalar(db_url, "select count(*) from gold.dim_product") + scalar(
        db_url, "select count(*) from gold.mart_sales_by_customer"
    ) + scalar(db_url, "select count(*) from gold.customers_snapshot")
    assert tally[1] == str(scalar(db_url, "select run_id from meta.pipeline_runs"))
    tests = run_cli(["test", "--json"], env=env)
    nodes = [n for c in json.loads(tests.stdout)["commands"] for n in c["nodes"]]
    # every data and unit test, all passed; the freshness checks only in `test`: run-all's load
    # just wrote both sales tables they check
    freshness = [n["name"] for n in nodes if n["kind"] == "source"]
    assert sorted(freshness) == ["sales_customer", "sales_product"]
    assert int(tally[5]) == len(nodes) - len(freshness)


@pytest.mark.slow  # runs dbt
def test_run_all_off_a_terminal_prints_plain_lines(env: dict[str, str], db_url: str) -> None:
    first = run_cli(["run-all"], env=env)
    idle = run_cli(["run-all"], env=env)
    assert first.returncode == idle.returncode == 0, first.stderr + idle.stderr
    for result in (first, idle):
        assert "\x1b" not in result.stdout + result.stderr
    assert TALLY.fullmatch(first.stdout.splitlines()[-1])
    assert re.fullmatch(
        r"extract customers: 500 records, 0 rejected, 1 file\(s\), [\d.]+s "
        r"\([\d,]+/s\)",
        first.stdout.splitlines()[0],
    )
    assert idle.stdout.splitlines()[-3:-1] == [
        "transform: skipped, nothing new in silver since the last build",
        "test: skipped, nothing new in silver since the last build",
    ]
    assert IDLE_TALLY.fullmatch(idle.stdout.splitlines()[-1])


# -- --json ------------------------------------------------------------------------------------


def test_every_command_but_the_mock_server_has_json() -> None:
    def commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    found = dict(commands(typer.main.get_command(app)))
    assert {"run-all", "config", "state show", "doctor", "status"} <= set(found)
    missing = [
        name for name, command in found.items() if "--json" not in {o for p in command.params for o in p.opts}
    ]
    assert missing == ["api serve"]


@pytest.mark.slow  # runs dbt
def test_json_documents_of_the_pipeline_commands(env: dict[str, str], db_url: str) -> None:
    run_all = run_cli(["run-all", "--json"], env=env)
    assert run_all.returncode == 0, run_all.stderr
    document = json.loads(run_all.stdout)
    assert document["status"] == "success" and document["trigger"] == "cli"
    assert [s["step"] for s in document["steps"]] == ["extract", "load", "transform", "test"]
    assert all(isinstance(s["seconds"], float) and s["status"] == "success" for s in document["steps"])
    assert document["started_at"].endswith("+00:00") and isinstance(document["seconds"], float)
    assert document["tally"]["silver_rows"] == silver_total(db_url)
    assert document["tally"]["tests_failed"] == 0
    # the step lines still reach the log, on stderr, while stdout holds the document alone
    assert "load sales_product: 1 file(s), " in run_all.stderr

    extracted = json.loads(run_cli(["extract", "--json"], env=env).stdout)
    assert [e["entity"] for e in extracted["entities"]] == ["customers", "products", "sales"]
    assert extracted["entities"][2]["cursor_from"] == 301
    loaded = json.loads(run_cli(["load", "--json"], env=env).stdout)
    assert loaded["tables"]["sales_customer"]["rows"] == 0 and loaded["errors"] == []

    status = json.loads(run_cli(["status", "--json"], env=env).stdout)
    assert status["cursor"]["next_sales_id"] == 301
    assert status["silver_rows"]["sales_customer"] == 300
    assert all(isinstance(r["seconds"], float) for r in status["runs"])  # not "1.23" text
    assert status["runs"][0]["started_at"].endswith("+00:00")

    shown = json.loads(run_cli(["state", "show", "--json"], env=env).stdout)
    assert shown["next_sales_id"] == 301 and shown["last_run_ts"].endswith("+00:00")
    moved = json.loads(run_cli(["state", "set", "--last-sales-id", "250", "--json"], env=env).stdout)
    assert moved == {"next_sales_id": 250, "previous_next_sales_id": 301}
    migrated = json.loads(run_cli(["db", "migrate", "--json"], env=env).stdout)
    assert migrated == {"applied": []}
    pruned = json.loads(run_cli(["bronze", "prune", "--dry-run", "--json"], env=env).stdout)
    assert pruned == {"dry_run": True, "files": [], "bytes": 0}


def test_json_documents_of_config_schedule_and_deps(cli_env: dict[str, str], tmp_path: Path) -> None:
    config = json.loads(invoke(["config", "--json"], env=cli_env).stdout)
    assert config["mode"] == "configured"
    assert config["settings"]["RETAIL_PAGE_SIZE"] == {"value": 250, "source": "default"}
    assert config["settings"]["RETAIL_HTTP_RETRIES"] == {"value": 8, "source": "environment"}
    assert config["settings"]["RETAIL_HTTP_TIMEOUT"]["value"] == 30.0
    assert config["settings"]["RETAIL_API_KEY"] == {"value": "***", "source": "environment"}
    assert config["settings"]["RETAIL_METRICS_FILE"] == {"value": None, "source": "default"}
    assert config["settings"]["RETAIL_LOG_FORMAT"] == {"value": "text", "source": "default"}
    cron = json.loads(invoke(["schedule", "cron", "--json"], env=cli_env).stdout)
    assert cron["kind"] == "cron" and "run-all" in cron["text"]
    deps = run_cli(["deps", "--json"], env=cli_env)
    assert json.loads(deps.stdout) == {"installed": False}


@pytest.mark.parametrize("command", [["extract"], ["run-all"]])
def test_a_failure_with_json_prints_the_error_object(env: dict[str, str], command: list[str]) -> None:
    result = run_cli([*command, "--json"], env={**env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    assert result.returncode == 77
    assert json.loads(result.stdout) == {"error": {"code": 77, "step": "extract", "message": BAD_KEY}}
    assert result.stderr.splitlines()[-1] == f"error: {BAD_KEY}"
    assert API_KEY not in result.stdout + result.stderr


def test_a_bad_setting_with_json_is_an_error_object_without_a_step(cli_env: dict[str, str]) -> None:
    result = invoke(["status", "--json"], env={**cli_env, "RETAIL_PAGE_SIZE": "0"})
    message = "RETAIL_PAGE_SIZE='0' is invalid: expected a whole number from 1 to 1000"
    assert result.exit_code == 78
    assert json.loads(result.stdout) == {"error": {"code": 78, "step": None, "message": message}}
    assert result.stderr == f"error: {message}\n"


def test_history_and_status_name_the_host_each_step_ran_on(env: dict[str, str], db_url: str) -> None:
    """Steps spread over workers (Airflow on Celery): each run says where it ran."""
    assert run_cli(["extract"], env={**env, "RETAIL_HOST": "worker-a"}).returncode == 0
    assert run_cli(["load"], env={**env, "RETAIL_HOST": "worker-b"}).returncode == 0
    assert run_cli(["load"], env={**env, "RETAIL_HOST": ""}).returncode == 0  # empty = unset
    with psycopg.connect(db_url) as conn:
        history = conn.execute(
            "select host, steps -> 0 ->> 'step' from meta.pipeline_runs order by started_at"
        ).fetchall()
    assert history == [("worker-a", "extract"), ("worker-b", "load"), (socket.gethostname(), "load")]

    status = json.loads(run_cli(["status", "--json"], env=env).stdout)
    assert [r["host"] for r in status["runs"]] == [socket.gethostname(), "worker-b", "worker-a"]
    plain = run_cli(["status"], env=env).stdout.splitlines()
    runs = [line.split("\t") for line in plain if line.count("\t") == 5]
    assert [(r[1], r[2], r[3]) for r in runs[1:]] == [
        ("cli", socket.gethostname(), "success"),
        ("cli", "worker-b", "success"),
        ("cli", "worker-a", "success"),
    ]
    assert runs[0][:4] == ["started", "trigger", "host", "status"]


# -- --quiet, --verbose, RETAIL_LOG_FORMAT=json ----------------------------------------------


@pytest.mark.slow  # runs dbt
def test_quiet_prints_nothing_on_success_and_still_the_error(env: dict[str, str]) -> None:
    quiet = run_cli(["--quiet", "run-all"], env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert run_cli(["-q", "state", "show"], env=env).stdout.startswith("next sales id: 301\n")
    failed = run_cli(["-q", "run-all"], env={**env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    assert failed.returncode == 77
    assert (failed.stdout, failed.stderr) == ("", f"error: {BAD_KEY}\n")
    both = run_cli(["-q", "-v", "status"], env=env)
    assert both.returncode == 2 and "choose one of them" in both.stderr


@pytest.mark.slow  # runs dbt
def test_verbose_adds_pages_files_nodes_and_setting_sources(env: dict[str, str]) -> None:
    result = run_cli(["--verbose", "run-all"], env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "setting RETAIL_PAGE_SIZE=50 (environment)" in lines
    assert "setting RETAIL_TRIGGER=cli (default)" in lines
    assert "setting RETAIL_API_KEY=*** (environment)" in lines
    assert "extract sales: page 6, 300 records read of ~300" in lines
    assert "load sales_customer: file 1 of 1, 300 rows" in lines
    assert "dbt build: model sales_item started" in lines
    assert any(re.fullmatch(r"dbt build: model sales_item success in [\d.]+s", line) for line in lines)
    assert API_KEY not in result.stdout + result.stderr


@pytest.mark.slow  # runs dbt
def test_json_log_format_makes_every_stderr_line_a_json_object(env: dict[str, str]) -> None:
    log_env = {**env, "RETAIL_LOG_FORMAT": "json"}
    result = run_cli(["run-all"], env=log_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # a run's lines are log lines: all on stderr, as JSON
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert all(set(r) >= {"ts", "level", "message"} and r["level"] == "info" for r in records)
    assert all(r["ts"].endswith("+00:00") for r in records)
    assert {r["step"] for r in records if "step" in r} == {"extract", "load", "transform", "test"}
    assert TALLY.fullmatch(records[-1]["message"])

    failed = run_cli(["run-all"], env={**log_env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    last = json.loads(failed.stderr.splitlines()[-1])
    assert failed.returncode == 77
    assert {k: last[k] for k in ("level", "message", "code", "step")} == {
        "level": "error",
        "message": BAD_KEY,
        "code": 77,
        "step": "extract",
    }
    bad = run_cli(["status"], env={**log_env, "RETAIL_PAGE_SIZE": "x"})
    assert json.loads(bad.stderr)["message"].startswith("RETAIL_PAGE_SIZE='x' is invalid")
    assert (
        run_cli(["config"], env={**env, "RETAIL_LOG_FORMAT": "xml"}).stderr
        == "error: RETAIL_LOG_FORMAT='xml' is invalid: expected one of text, json\n"
    )


# -- doctor ------------------------------------------------------------------------------------


DOCTOR_CHECKS = ["data dir", "api", "clock", "database", "migrations", "lock", "dbt"]


@pytest.mark.slow  # runs dbt
def test_doctor_all_green_against_the_mock_and_the_test_database(env: dict[str, str], data_dir: Path) -> None:
    data_dir.chmod(0o700)
    assert run_cli(["db", "migrate"], env=env).returncode == 0
    result = run_cli(["doctor"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"ok   {name}" for name in DOCTOR_CHECKS]
    assert lines[1] == f"ok   api: {env['RETAIL_API_URL']} reachable, key accepted, 200 products"
    assert re.fullmatch(
        r"ok   database: PostgreSQL \d+.*, database retailctl_test_\w+ as postgres "
        r"\(.+\)",
        lines[3],
    ), lines[3]
    assert re.fullmatch(r"ok   migrations: all \d+ applied \(latest \d{3}_\w+\)", lines[4])
    document = json.loads(run_cli(["doctor", "--json"], env=env).stdout)
    assert document["ok"] is True
    assert [(c["name"], c["status"]) for c in document["checks"]] == [(name, "ok") for name in DOCTOR_CHECKS]
    code, output = run_on_terminal(["doctor"], env)
    assert code == 0 and "✓ api:" in lines_of(output)[1]


@pytest.mark.slow  # runs dbt
def test_doctor_fails_on_a_wrong_api_key(env: dict[str, str]) -> None:
    result = run_cli(["doctor"], env={**env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    assert result.returncode == 1
    assert (
        f"FAIL api: {env['RETAIL_API_URL']} rejected the key (HTTP 401): check RETAIL_API_KEY"
        in result.stdout.splitlines()
    )
    assert result.stderr.splitlines()[-1] == "error: doctor: 1 check(s) failed: api"
    code, output = run_on_terminal(["doctor"], {**env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    assert code == 1 and any(line.startswith("✗ api: ") for line in lines_of(output))


@pytest.mark.slow  # runs dbt
def test_doctor_reports_an_unreachable_database_and_what_it_could_not_check(
    env: dict[str, str], data_dir: Path
) -> None:
    result = run_cli(
        ["doctor", "--json"], env={**env, "RETAIL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    )
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["database"]["status"] == "fail"
    assert checks["database"]["detail"].startswith(
        "database unreachable at postgresql://postgres@127.0.0.1:1/nowhere: "
    )
    assert (checks["migrations"]["status"], checks["lock"]["status"]) == ("skip", "skip")
    assert checks["api"]["status"] == "ok"  # the others still ran
    assert checks["data dir"]["status"] == "warn"  # the fixture's data dir is 0755
    assert (
        checks["data dir"]["detail"] == f"{data_dir} is readable by others (mode 0755): chmod 700 {data_dir}"
    )


@pytest.mark.slow  # runs dbt
def test_doctor_says_migrations_are_pending_without_applying_them(env: dict[str, str], db_url: str) -> None:
    result = run_cli(["doctor"], env=env)
    assert result.returncode == 0  # pending migrations are a warning: the next command applies them
    line = next(line for line in result.stdout.splitlines() if "migrations:" in line)
    assert line == (
        f"warn migrations: {len(VERSIONS)} of {len(VERSIONS)} pending "
        f"({', '.join(VERSIONS)}): the next command applies them (or `retailctl db migrate`)"
    )
    assert scalar(db_url, "select to_regclass('meta.schema_migrations')") is None  # read-only
    assert run_cli(["db", "migrate"], env=env).returncode == 0
    with psycopg.connect(db_url) as conn:  # a newer retailctl migrated this database
        conn.execute("insert into meta.schema_migrations (version, checksum) values ('999_next', 'x')")
    newer = run_cli(["doctor"], env=env)
    assert newer.returncode == 1
    assert next(line for line in newer.stdout.splitlines() if "migrations:" in line).startswith(
        "FAIL migrations: this database records migration(s) 999_next, which this retailctl does not ship"
    )


# -- Prometheus textfile ---------------------------------------------------------------------


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


@pytest.mark.slow  # runs dbt
def test_metrics_textfile_after_success_failure_and_a_single_step(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "textfile" / "retailctl.prom"
    metrics_env = {**env, "RETAIL_METRICS_FILE": str(path)}
    assert run_cli(["run-all"], env=metrics_env).returncode == 0
    first = metrics_of(path)
    assert first["retailctl_last_exit_code", ()] == 0
    for table in ("customers", "products", "sales_customer", "sales_product"):
        assert first["retailctl_rows", (("layer", "silver"), ("table", table))] == scalar(
            db_url, f"select count(*) from silver.{table}"
        )
    assert first["retailctl_rows", (("layer", "gold"), ("table", "sales_item"))] == scalar(
        db_url, "select count(*) from gold.sales_item"
    )
    assert first["retailctl_sales_cursor", ()] == 301
    assert first["retailctl_rejected_records_total", ()] == 0
    success = scalar(
        db_url,
        "select extract(epoch from max(finished_at))::float8 "
        "from meta.pipeline_runs where status = 'success'",
    )
    assert first["retailctl_last_success_timestamp_seconds", ()] == success
    assert {labels[0][1] for name, labels in first if name == "retailctl_step_duration_seconds"} == {
        "extract",
        "load",
        "transform",
        "test",
    }
    assert 0 <= first["retailctl_gold_freshness_seconds", ()] < 120
    assert list(path.parent.iterdir()) == [path]  # the temp file was renamed over it

    failed = run_cli(["run-all"], env={**metrics_env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    assert failed.returncode == 77
    after_failure = metrics_of(path)
    assert after_failure["retailctl_last_exit_code", ()] == 77
    assert after_failure["retailctl_last_success_timestamp_seconds", ()] == success

    unreachable = run_cli(
        ["run-all"], env={**metrics_env, "RETAIL_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    )
    assert unreachable.returncode == 69
    carried = metrics_of(path)
    assert carried["retailctl_last_exit_code", ()] == 69
    assert carried["retailctl_last_success_timestamp_seconds", ()] == success  # from the file
    assert carried["retailctl_sales_cursor", ()] == 301

    assert run_cli(["load"], env=metrics_env).returncode == 0
    single = metrics_of(path)
    assert single["retailctl_last_exit_code", ()] == 0
    assert single["retailctl_last_success_timestamp_seconds", ()] > success
    load_seconds = single["retailctl_step_duration_seconds", (("step", "load"),)]
    assert load_seconds != first["retailctl_step_duration_seconds", (("step", "load"),)]
    assert (
        single["retailctl_step_duration_seconds", (("step", "transform"),)]
        == first["retailctl_step_duration_seconds", (("step", "transform"),)]
    )  # kept from before


# -- healthcheck pings -----------------------------------------------------------------------


class PingServer:
    """Records every ping (method, path, rid, body) and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[str, str, str | None, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                path, _, query = self.path.partition("?")
                rid = query.removeprefix("rid=") if query.startswith("rid=") else None
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                server.received.append(("POST", path, rid, body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def start_ping_server() -> Iterator[Callable[..., PingServer]]:
    """Start ping servers answering a given status; closed after the test."""
    servers: list[PingServer] = []

    def start(status: int = 200) -> PingServer:
        servers.append(PingServer(status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def ping_server(start_ping_server: Callable[..., PingServer]) -> PingServer:
    return start_ping_server()


@pytest.mark.xdist_group("small_run")
def test_pings_start_then_success_or_the_exit_code(copy_built, ping_server: PingServer) -> None:
    built = copy_built(SMALL_RUN)  # after a first run-all: the run pinging is an idle one
    db_url = built.db_url
    token = str(uuid.uuid4())
    ping_env = {**built.env, "RETAIL_HEALTHCHECK_URL": f"{ping_server.url}/{token}"}
    ok = run_cli(["run-all"], env=ping_env)
    assert ok.returncode == 0, ok.stderr
    run_id = str(scalar(db_url, "select run_id from meta.pipeline_runs order by started_at desc limit 1"))
    assert [(m, p, r) for m, p, r, _ in ping_server.received] == [
        ("POST", f"/{token}/start", run_id),
        ("POST", f"/{token}", run_id),
    ]

    ping_server.received.clear()
    failed = run_cli(["run-all"], env={**ping_env, "RETAIL_API_KEY": "NOT_" + API_KEY})
    assert failed.returncode == 77
    assert [(p, b) for _, p, _, b in ping_server.received] == [
        (f"/{token}/start", ""),
        (f"/{token}/77", BAD_KEY),
    ]

    config = run_cli(["config"], env=ping_env)
    assert f"RETAIL_HEALTHCHECK_URL\t{ping_server.url}/***\tenvironment" in config.stdout
    assert token not in config.stdout + config.stderr + ok.stdout + ok.stderr + failed.stderr


def test_a_ping_server_answering_500_never_fails_the_run(env: dict[str, str], start_ping_server) -> None:
    server = start_ping_server(status=500)
    # a single step is a run too, and pings alike
    result = run_cli(["load"], env={**env, "RETAIL_HEALTHCHECK_URL": f"{server.url}/check"})
    assert result.returncode == 0, result.stderr
    assert [p for _, p, _, _ in server.received] == ["/check/start"] * 3 + ["/check"] * 3
    assert result.stderr.splitlines() == [
        "warning: healthcheck ping /start failed: HTTP 500 after 3 attempt(s)",
        "warning: healthcheck ping (success) failed: HTTP 500 after 3 attempt(s)",
    ]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """The URL of a port whose handshakes the kernel completes, and nobody ever reads or answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    yield f"http://127.0.0.1:{silent.getsockname()[1]}"
    silent.close()


@pytest.mark.xdist_group("small_run")
def test_a_ping_server_that_never_answers_delays_the_run_a_bounded_time(
    copy_built, silent_server: str
) -> None:
    env = copy_built(SMALL_RUN).env  # after a first run-all: the work done, the next run is idle
    started = time.monotonic()
    assert run_cli(["run-all"], env=env).returncode == 0
    baseline = time.monotonic() - started
    started = time.monotonic()
    result = run_cli(["run-all"], env={**env, "RETAIL_HEALTHCHECK_URL": f"{silent_server}/x"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert [line.split(" failed: ")[1].split(" after ")[0] for line in result.stderr.splitlines()] == [
        "ReadTimeout",
        "ReadTimeout",
    ]
    print(f"idle run-all {baseline:.2f}s; with a silent ping server {elapsed:.2f}s")
    assert elapsed - baseline < 15  # two pings of at most 4 s each
