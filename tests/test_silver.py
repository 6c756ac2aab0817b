"""`load`: bronze into silver exactly once, against a real PostgreSQL."""

from __future__ import annotations

import random
import shutil
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from retailctl import stopping
from tests.helpers import (
    checksums,
    extract,
    load,
    python_path,
    run_cli,
    settings_for,
    wait_until,
    write_bronze,
)


def line(sale_id: int, line_no: int, amount: float, sku: str = "SKU-1", quantity: int = 1) -> dict[str, Any]:
    return {
        "sale_id": sale_id,
        "line_no": line_no,
        "product_sku": sku,
        "quantity": quantity,
        "amount": amount,
    }


def test_load_twice_equals_load_once(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=1_500, invalid_rate=0.02)
    extract(settings_for(data_dir, db_url, server.url))
    first = load(data_dir, db_url)
    after_first = checksums(db_url, with_loaded_at=True)
    second = load(data_dir, db_url)
    assert first.tables["sales_customer"].inserted == after_first["sales_customer"][0] > 1_400
    assert second.rows == 0 and second.errors == []
    with psycopg.connect(db_url, autocommit=True) as conn:  # forget the manifest: reload it all
        conn.execute("delete from meta.loaded_files")
    third = load(data_dir, db_url)
    assert third.rows == first.rows
    assert sum(t.inserted + t.updated for t in third.tables.values()) == 0
    assert checksums(db_url, with_loaded_at=True) == after_first  # _loaded_at kept too


def test_load_analyzes_a_table_only_when_autoanalyze_would(start_mock, data_dir: Path, db_url: str) -> None:
    """Never analyzed, or over 50 rows + 10 % written since: ANALYZE samples up to 30,000 pages,
    too much to pay every hour on a big table for plans that go through indexes."""
    server = start_mock(sales=3_000)

    def load_next(sales: int) -> int:
        settings = settings_for(
            data_dir, db_url, server.url, RETAIL_SALES_LOOKBACK="0", RETAIL_MAX_SALES_PER_RUN=str(sales)
        )
        extract(settings, entities=["sales"])
        assert load(data_dir, db_url).tables["sales_customer"].inserted == sales
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "select analyze_count from pg_stat_user_tables where relid = %s::regclass",
                ("silver.sales_customer",),
            ).fetchone()
        assert row is not None
        return int(row[0])

    assert load_next(2_000) == 1  # never analyzed
    settled = load_next(100)  # 1 or 2: the first load's counts may reach the statistics late
    assert load_next(100) == settled  # 100 written since, under 50 + 10 % of 2,100
    assert load_next(300) == settled + 1  # over it


def test_overlapping_files_from_a_reextracted_chunk(start_mock, data_dir: Path, db_url: str) -> None:
    server = start_mock(sales=1_000)
    # no lookback: no content hashes, so the backfill writes its 400 sales again
    settings = settings_for(data_dir, db_url, server.url, RETAIL_SALES_LOOKBACK="0")
    extract(settings, entities=["sales"])
    extract(settings, entities=["sales"], from_id=601)  # 400 sales again, in new files
    result = load(data_dir, db_url)
    counts = checksums(db_url)
    assert counts["sales_customer"][0] == 1_000
    assert result.tables["sales_customer"].rows == 1_400
    assert result.tables["sales_customer"].inserted == 1_000
    assert result.tables["sales_customer"].unchanged == 400


def test_duplicates_inside_one_file_are_collapsed_keeping_the_last(data_dir: Path, db_url: str) -> None:
    write_bronze(data_dir, "sales_product", [line(1, 1, 10.0), line(1, 2, 5.5), line(1, 1, 12.25)])
    result = load(data_dir, db_url)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select sale_id, line_no, amount from silver.sales_product order by line_no"
        ).fetchall()
    assert rows == [(1, 1, Decimal("12.25")), (1, 2, Decimal("5.5"))]
    assert (result.tables["sales_product"].duplicates, result.tables["sales_product"].inserted) == (1, 2)


def test_a_changed_email_in_a_later_snapshot_updates_silver(start_mock, data_dir: Path, db_url: str) -> None:
    extract(settings_for(data_dir, db_url, start_mock(sales=10).url), entities=["customers"])
    load(data_dir, db_url)
    with psycopg.connect(db_url) as conn:
        before = dict(conn.execute("select customer_id, _loaded_at from silver.customers").fetchall())
    extract(
        settings_for(data_dir, db_url, start_mock(sales=10, customer_version=1).url), entities=["customers"]
    )
    result = load(data_dir, db_url)
    with psycopg.connect(db_url) as conn:
        emails = conn.execute("select emails from silver.customers where customer_id = 'C000011'").fetchone()
        after = dict(conn.execute("select customer_id, _loaded_at from silver.customers").fetchall())
    assert result.tables["customers"].updated == 50 and result.tables["customers"].inserted == 0
    assert emails is not None and emails[0][0] == "chloe.11.v1@example.com"
    moved = {key for key in before if after[key] != before[key]}
    assert len(moved) == 50 and all(after[key] > before[key] for key in moved)


def test_an_older_snapshot_loaded_after_a_newer_one_does_not_regress(data_dir: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    old = write_bronze(
        data_dir,
        "customers",
        [{"customer_id": "C1", "emails": ["old@example.com"], "phone_numbers": []}],
        moment=now - timedelta(hours=2),
    )
    aside = data_dir / "aside.ndjson"
    shutil.move(old, aside)
    write_bronze(
        data_dir,
        "customers",
        [{"customer_id": "C1", "emails": ["new@example.com"], "phone_numbers": ["+1 555"]}],
        moment=now,
    )
    load(data_dir, db_url)
    shutil.move(aside, old)  # the older file turns up late
    result = load(data_dir, db_url)
    with psycopg.connect(db_url) as conn:
        row = conn.execute("select emails, phone_numbers from silver.customers").fetchone()
    assert result.tables["customers"].files == 1 and result.tables["customers"].unchanged == 1
    assert row == (["new@example.com"], ["+1 555"])


def quarantined_rows(data_dir: Path, path: Path) -> list[dict[str, Any]]:
    """The lines load set aside from that bronze file, as recorded beside bronze."""
    relative = path.relative_to(data_dir / "bronze")
    target = data_dir / "bronze" / "_rejected" / "load" / relative
    return [orjson.loads(raw) for raw in target.read_bytes().splitlines()]


def test_a_truncated_line_is_quarantined_and_the_rest_loads(data_dir: Path, db_url: str) -> None:
    good = write_bronze(data_dir, "sales_product", [line(1, 1, 1.0), line(1, 2, 2.0)])
    bad = write_bronze(data_dir, "sales_product", [line(2, 1, 3.0), line(2, 2, 4.0), line(2, 3, 5.0)])
    content = bad.read_bytes()
    bad.write_bytes(content[: len(content) - 25])  # cut inside the third line
    env = {
        "PATH": "/usr/bin:/bin",
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": "http://x",
        "RETAIL_DATA_DIR": str(data_dir),
    }
    result = run_cli(["load"], env=env)
    relative = bad.relative_to(data_dir / "bronze")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {relative}: 1 line(s) quarantined to {bad.name} under _rejected/load "
        "(line 3: truncated (no end of line)); the other 2 loaded",
        "error: 1 line(s) quarantined; the others loaded",
    ]
    assert (
        "sales_product: 2 file(s), 5 rows: 4 inserted, 0 updated, 0 unchanged, 1 quarantined" in result.stdout
    )
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select sale_id, line_no from silver.sales_product order by 1, 2").fetchall() == [
            (1, 1),
            (1, 2),
            (2, 1),
            (2, 2),
        ]
        assert conn.execute(
            "select path, rows, quarantined_lines from meta.loaded_files order by path"
        ).fetchall() == sorted([(str(good.relative_to(data_dir / "bronze")), 2, 0), (str(relative), 2, 1)])
    [kept] = quarantined_rows(data_dir, bad)
    assert (kept["_file"], kept["_line"], kept["_reject_reason"]) == (
        str(relative),
        3,
        "truncated (no end of line)",
    )
    assert kept["_raw"].encode() == content[: len(content) - 25].splitlines()[2]
    again = run_cli(["load"], env=env)  # the file is loaded (with its quarantined line): done
    assert (again.returncode, again.stderr) == (0, "")


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"{not json}\n", "not valid JSON at column 2: unexpected character, expected a string key"),
        (b'{"sale_id": 9, "line_no": 1}\n', "missing field 'product_sku'"),
        (
            b'{"sale_id": 9, "line_no": 1, "product_sku": "\xff"}\n',
            "not valid JSON at column 1: str is not valid UTF-8: surrogates not allowed",
        ),
        (
            b'{"sale_id": 9, "line_no": 1, "product_sku": "S", "quantity": "x", "amount": 1, '
            b'"_ingestion_ts": "2026-01-01T00:00:00+00:00", '
            b'"_batch_id": "00000000-0000-0000-0000-000000000000"}\n',
            "quantity not an integer",
        ),
        (
            b'{"sale_id": 9, "line_no": 1, "product_sku": {"a": 1}, "quantity": 1, "amount": 1, '
            b'"_ingestion_ts": "2026-01-01T00:00:00+00:00", '
            b'"_batch_id": "00000000-0000-0000-0000-000000000000"}\n',
            "product_sku not a string",
        ),
        (
            b'{"sale_id": 9, "line_no": 1, "product_sku": "S", "quantity": 1, "amount": 1, '
            b'"_ingestion_ts": "not-a-time", "_batch_id": "00000000-0000-0000-0000-000000000000"}\n',
            "_ingestion_ts 'not-a-time' is not its file's ({ts}, from the file name)",
        ),
    ],
)
def test_a_malformed_line_is_quarantined_with_its_line_and_reason(
    data_dir: Path, db_url: str, bad_line: bytes, reason: str
) -> None:
    path = write_bronze(data_dir, "sales_product", [line(1, 1, 1.0), line(1, 2, 2.0)])
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + bad_line + lines[1])
    result = load(data_dir, db_url)
    relative = path.relative_to(data_dir / "bronze")
    reason = reason.format(ts=orjson.loads(lines[0])["_ingestion_ts"])
    assert result.errors == []
    assert result.quarantined == [
        f"{relative}: 1 line(s) quarantined to {path.name} under "
        f"_rejected/load (line 2: {reason}); the other 2 loaded"
    ]
    assert checksums(db_url)["sales_product"][0] == 2
    [kept] = quarantined_rows(data_dir, path)
    assert (kept["_line"], kept["_reject_reason"]) == (2, reason)
    assert kept["_raw"] == bad_line.rstrip(b"\n").decode("utf-8", "backslashreplace")


def test_a_changed_loaded_file_is_refused(data_dir: Path, db_url: str) -> None:
    path = write_bronze(data_dir, "sales_product", [line(1, 1, 1.0)])
    load(data_dir, db_url)
    path.touch()  # a touch alone (same content, new mtime) is not a change
    touched = load(data_dir, db_url)
    assert (touched.errors, touched.rows) == ([], 0)
    with path.open("ab") as handle:
        handle.write(path.read_bytes())
    result = load(data_dir, db_url)
    assert result.errors == [
        f"{path.relative_to(data_dir / 'bronze')}: changed after it was loaded "
        "(sha256 differs); bronze is append-only: restore the file or move it aside"
    ]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from silver.sales_product").fetchone() == (1,)


def test_dry_run_lists_and_changes_nothing(data_dir: Path, db_url: str) -> None:
    path = write_bronze(data_dir, "sales_product", [line(1, 1, 1.0)])
    result = load(data_dir, db_url, dry_run=True)
    assert result.pending == [str(path.relative_to(data_dir / "bronze"))]
    assert checksums(db_url)["sales_product"][0] == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from meta.loaded_files").fetchone() == (0,)


def big_sales_file(data_dir: Path, count: int, seed: int = 5) -> Decimal:
    """`count` lines with random cent amounts; returns their exact sum."""
    rng = random.Random(seed)
    cents = [rng.randint(1, 99_999_99) for _ in range(count)]
    write_bronze(
        data_dir,
        "sales_product",
        [line(i // 3 + 1, i % 3 + 1, c / 100, quantity=1 + i % 4) for i, c in enumerate(cents)],
    )
    return Decimal(sum(cents)) / 100


@pytest.mark.slow
def test_the_sum_of_a_million_amounts_is_exact(data_dir: Path, db_url: str) -> None:
    expected = big_sales_file(data_dir, 1_000_000)
    result = load(data_dir, db_url)
    with psycopg.connect(db_url) as conn:
        total = conn.execute("select count(*), sum(amount) from silver.sales_product").fetchone()
    assert result.tables["sales_product"].inserted == 1_000_000
    assert total == (1_000_000, expected)


def copy_running(db_url: str, application_name: str) -> bool:
    """That client's COPY is running on the server now."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name = %s "
            "and state = 'active' and query ilike 'copy%%'",
            (application_name,),
        ).fetchone()
    return row is not None and row[0] > 0


@pytest.mark.slow
def test_sigkilled_load_then_rerun_equals_an_uninterrupted_load(
    tmp_path: Path, db_url: str, reference_db_url: str, spawn
) -> None:
    data_dir = tmp_path / "killed"
    big_sales_file(data_dir, 600_000)
    write_bronze(data_dir, "customers", [{"customer_id": "C1", "emails": [], "phone_numbers": []}])
    env = {
        "PATH": "/usr/bin:/bin",
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": "http://x",
        "RETAIL_DATA_DIR": str(data_dir),
        **python_path(),
    }
    assert run_cli(["db", "migrate"], env=env).returncode == 0
    victim = spawn(["load"], env)
    wait_until(
        lambda: copy_running(db_url, f"retailctl pid={victim.pid} load"),
        60,
        "the load's COPY of the big file",
        alive=victim,
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with psycopg.connect(db_url) as conn:
        files = conn.execute("select count(*) from meta.loaded_files").fetchone()
    assert files is not None and files[0] < 2, "the kill landed before the end"
    rerun = run_cli(["load"], env=env)
    assert rerun.returncode == 0, rerun.stderr

    load(data_dir, reference_db_url)  # the same files, uninterrupted
    assert checksums(db_url) == checksums(reference_db_url)


def test_load_stops_before_its_next_file_once_a_stop_signal_came(
    data_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT Python dropped (see retailctl.stopping) still stops load: nothing is loaded."""
    write_bronze(data_dir, "sales_product", [line(1, 1, 10.0)])
    monkeypatch.setattr(stopping, "_received", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        load(data_dir, db_url)
    monkeypatch.setattr(stopping, "_received", None)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from meta.loaded_files").fetchone() == (0,)
    assert load(data_dir, db_url).tables["sales_product"].inserted == 1  # then loads as usual
