"""Every row of the README's exit-code table, provoked for real through the CLI."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from mock_api import BackgroundServer, FaultConfig
from retailctl.store.lock import LOCK_NAMESPACE, PIPELINE_LOCK_ID
from tests.helpers import API_KEY, run_cli, wait_until
from tests.helpers.scripted_api import Reply, Request, ScriptedApi

README = Path(__file__).resolve().parents[1] / "README.md"

Case = Callable[[dict[str, str], "CaseTools"], tuple[int, str]]  # -> (exit code, stderr)


class CaseTools:
    """What a case may need beyond the configured environment."""

    def __init__(
        self,
        db_url: str,
        start_mock: Callable[..., BackgroundServer],
        spawn: Callable[..., subprocess.Popen[str]],
    ) -> None:
        self.db_url = db_url
        self.start_mock = start_mock
        self.spawn = spawn  # a child process, killed after the test if it is still running


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = run_cli(args, env=env)
    return result.returncode, result.stderr


def _success(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    return _run(["extract", "--entity", "products"], env)


def _source_answers_404(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    def not_found(request: Request) -> Reply:
        return Reply(status=404, body=b'{"detail": "Not Found"}')

    with ScriptedApi(not_found) as api:
        code, stderr = _run(["extract", "--entity", "products"], {**env, "RETAIL_API_URL": api.url})
    assert (
        f"error: products: GET {api.url}/products?limit=250&offset=0 answered HTTP 404: "
        f'\'{{"detail": "Not Found"}}\''
    ) in stderr.splitlines()
    return code, stderr


def _usage_error(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    code, stderr = _run(["bronze", "prune", "--older-than", "5x"], env)
    assert "'5x' is not an age" in stderr
    return code, stderr


def _data_tests_fail(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    assert _run(["transform"], env)[0] == 0  # Gold built (empty): every test passes on it
    with psycopg.connect(tools.db_url, autocommit=True) as conn:
        for _ in range(2):  # one fact line twice: unique sales_item_id fails
            conn.execute("""
                insert into gold.sales_item (sales_item_id, sale_id, line_no, sales_datetime, day,
                    customer_id, product_sku, item_quantity, item_amount, _updated_at)
                values ('1-1', 1, 1, now(), current_date, 'C-1', 'SKU-1', 1, 1.00, now())""")
    code, stderr = _run(["test"], env)
    assert "unique_sales_item_sales_item_id: 1 failing row(s)" in stderr
    return code, stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _source_unreachable(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    api_url = f"http://127.0.0.1:{_closed_port()}"
    return _run(["extract"], {**env, "RETAIL_API_URL": api_url, "RETAIL_HTTP_RETRIES": "1"})


def _lock_held(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    with psycopg.connect(tools.db_url, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, PIPELINE_LOCK_ID))
        code, stderr = _run(["load"], env)
    assert "another retailctl run holds the lock" in stderr
    return code, stderr


def _key_rejected(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    return _run(["extract"], {**env, "RETAIL_API_KEY": "NOT_" + API_KEY})


def _bad_setting(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
    code, stderr = _run(["extract"], {**env, "RETAIL_PAGE_SIZE": "0"})
    assert (
        stderr.splitlines()[-1]
        == "error: RETAIL_PAGE_SIZE='0' is invalid: expected a whole number from 1 to 1000"
    )
    return code, stderr


def _stopped_by(signum: int) -> Case:
    def case(env: dict[str, str], tools: CaseTools) -> tuple[int, str]:
        server = tools.start_mock(sales=5_000, faults=FaultConfig(latency_ms=200))
        victim = tools.spawn(
            ["extract", "--entity", "sales"],
            {**env, "RETAIL_API_URL": server.url, "RETAIL_PAGE_SIZE": "100"},
            output=True,
        )
        wait_until(
            lambda: _connected(tools.db_url, "extract", victim.pid),
            60,
            "the extract to connect: it is then inside its work",
            alive=victim,
        )
        victim.send_signal(signum)
        _, stderr = victim.communicate(timeout=60)
        return victim.returncode, stderr

    return case


def _connected(db_url: str, application: str, pid: int) -> bool:
    """A session of process `pid` is open under `application`."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name "
            "like %s and application_name like %s",
            (f"%{application}%", f"%{pid}%"),
        ).fetchone()
    return bool(row and row[0])


CASES: dict[int, Case] = {
    0: _success,
    1: _source_answers_404,
    2: _usage_error,
    3: _data_tests_fail,
    69: _source_unreachable,
    75: _lock_held,
    77: _key_rejected,
    78: _bad_setting,
    130: _stopped_by(signal.SIGINT),
    143: _stopped_by(signal.SIGTERM),
}


def documented_exit_codes() -> set[int]:
    """The codes of the README's exit-code table (and the 130 its 143 row names)."""
    text = README.read_text()
    table = text[text.index("## Exit codes") :]
    table = table[: table.index("\n## ", 1)]
    codes = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    codes |= {int(code) for code in re.findall(r"\((\d+) for Ctrl-C\)", table)}
    return codes


def test_every_documented_exit_code_has_a_case() -> None:
    assert documented_exit_codes() == set(CASES)


SLOW = {3}  # builds and tests Gold with dbt


@pytest.mark.parametrize(
    "expected",
    [pytest.param(code, marks=pytest.mark.slow) if code in SLOW else code for code in sorted(CASES)],
)
def test_exit_code(expected: int, cli_env: dict[str, str], db_url: str, start_mock, spawn) -> None:
    code, stderr = CASES[expected](cli_env, CaseTools(db_url, start_mock, spawn))
    assert code == expected, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_docs_exits_1_when_dbt_cannot_generate_them(cli_env: dict[str, str], db_url: str) -> None:
    assert run_cli(["transform"], env=cli_env).returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:  # the fact's watermark column, gone
        conn.execute("alter table gold.sales_item drop column _source_loaded_at cascade")
    result = run_cli(["docs"], env=cli_env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: dbt docs generate failed: Runtime Error Database Error in model sales_item "
        '(models/core/sales_item.sql) column "_source_loaded_at" does not exist'
    )
    assert result.stdout == ""
