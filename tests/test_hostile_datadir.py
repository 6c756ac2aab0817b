"""A tampered, hand-edited, read-only or full data dir: load reads only what extract writes, a
line that cannot load is quarantined while the rest loads, everything stays private, and a disk
problem is one line with its exit code."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from retailctl.bronze_files import file_name, parse_file_name
from tests.helpers import bronze_rows, cursor_of, load, run_cli, write_bronze

NAME_RULE = "not a bronze file name extract writes (<dt=day>/<UTC timestamp>_<batch id>.ndjson)"


def cli(data_dir: Path, db_url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": "http://x",
        "RETAIL_DATA_DIR": str(data_dir),
        **extra,
    }


def line(sale_id: int, line_no: int, **fields: Any) -> dict[str, Any]:
    return {
        "sale_id": sale_id,
        "line_no": line_no,
        "product_sku": "SKU-00001",
        "quantity": 1,
        "amount": 1.5,
        **fields,
    }


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql).fetchall()


def quarantined(data_dir: Path, path: Path) -> list[tuple[int, str]]:
    target = data_dir / "bronze" / "_rejected" / "load" / path.relative_to(data_dir / "bronze")
    return [
        (row["_line"], row["_reject_reason"]) for row in map(orjson.loads, target.read_bytes().splitlines())
    ]


def test_load_reads_only_regular_files_named_as_extract_names_them(
    tmp_path: Path, data_dir: Path, db_url: str
) -> None:
    good = write_bronze(data_dir, "sales_product", [line(1, 1)])
    bronze = data_dir / "bronze"
    outside = tmp_path / "outside"  # a well-formed bronze tree anywhere else
    elsewhere = write_bronze(outside, "sales_product", [line(2, 1)])
    linked = good.parent / elsewhere.name
    linked.symlink_to(elsewhere)
    old_day = write_bronze(
        outside,
        "customers",
        [{"customer_id": "C9", "emails": [], "phone_numbers": []}],
        moment=datetime(2026, 1, 1, tzinfo=UTC),
    )
    (bronze / "customers").mkdir()
    (bronze / "customers" / "dt=2026-01-01").symlink_to(old_day.parent)
    stray = bronze / "products" / good.parent.name / "notes.ndjson"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b'{"product_sku": "P1"}\n')
    moved = bronze / "sales_product" / "dt=1999-01-01" / good.name.replace(good.name[:8], "20261001")
    moved.parent.mkdir()
    shutil.copy(good, moved)  # a file in another day's partition than its name says

    result = run_cli(["load"], env=cli(data_dir, db_url))
    relative = {path: str(path.relative_to(bronze)) for path in (linked, stray, moved)}
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: customers/dt=2026-01-01: a symlink (never followed); not loaded",
        f"error: {relative[stray]}: {NAME_RULE}; not loaded",
        f"error: {relative[moved]}: {NAME_RULE}; not loaded",
        f"error: {relative[linked]}: not a regular file (a symlink?); not loaded",
        "error: 4 bronze file(s) not loaded; the others were",
    ]
    assert query(db_url, "select sale_id from silver.sales_product") == [(1,)]
    assert query(db_url, "select count(*) from silver.customers") == [(0,)]
    assert query(db_url, "select path from meta.loaded_files") == [(str(good.relative_to(bronze)),)]

    for path in (linked, stray, moved, bronze / "customers" / "dt=2026-01-01"):
        path.unlink()
    clean = run_cli(["load"], env=cli(data_dir, db_url))
    assert (clean.returncode, clean.stderr) == (0, "")


def test_rows_that_do_not_carry_their_files_stamp_are_quarantined(data_dir: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    write_bronze(
        data_dir,
        "customers",
        [{"customer_id": "C1", "emails": ["a@x"], "phone_numbers": []}],
        moment=now - timedelta(hours=2),
    )
    forged = write_bronze(
        data_dir,
        "customers",
        [
            {"customer_id": "C1", "emails": ["forged@x"], "phone_numbers": []},
            {"customer_id": "C2", "emails": [], "phone_numbers": []},
            {"customer_id": "C3", "emails": [], "phone_numbers": []},
        ],
        moment=now - timedelta(hours=1),
    )
    lines = forged.read_bytes().splitlines(keepends=True)
    first, third = orjson.loads(lines[0]), orjson.loads(lines[2])
    stamp = (first["_ingestion_ts"], first["_batch_id"])
    first["_ingestion_ts"] = "2099-01-01T00:00:00+00:00"  # would pin C1 for ever
    third["_batch_id"] = str(uuid.uuid4())
    forged.write_bytes(orjson.dumps(first) + b"\n" + lines[1] + orjson.dumps(third) + b"\n")
    write_bronze(
        data_dir,
        "customers",
        [{"customer_id": "C1", "emails": ["genuine@x"], "phone_numbers": []}],
        moment=now,
    )

    result = load(data_dir, db_url)
    assert result.errors == []
    assert quarantined(data_dir, forged) == [
        (1, f"_ingestion_ts '2099-01-01T00:00:00+00:00' is not its file's ({stamp[0]}, from the file name)"),
        (3, f"_batch_id {third['_batch_id']!r} is not its file's ({stamp[1]}, from the file name)"),
    ]
    assert query(db_url, "select customer_id, emails from silver.customers order by 1") == [
        ("C1", ["genuine@x"]),
        ("C2", []),
    ]  # the later genuine snapshot is not pinned out


def test_a_hand_edited_file_postgres_would_refuse_loads_all_but_its_bad_lines_then_runs_go_on(
    start_mock, cli_env: dict[str, str], data_dir: Path, db_url: str
) -> None:
    source = start_mock(sales=50)
    sale = {"datetime": "2026-01-05T10:00:00+00:00", "total_amount": 3.0, "customer_id": "C000001"}
    headers = write_bronze(
        data_dir,
        "sales_customer",
        [
            {"id": 1001, **sale},
            {"id": 1002, **sale, "datetime": "2024-W01-1T10:00:00+00:00"},
            {"id": 2**63, **sale},
            {"id": 1003, **sale},
        ],
    )
    lines = write_bronze(
        data_dir,
        "sales_product",
        [
            line(1001, 1, amount=3.0),
            line(1002, 1, product_sku="SKU-\x00"),
            line(1003, 1, quantity=2**31),
            line(1003, 2, product_sku="S" * 20_000),
            line(1003, 3, amount=3.0),
        ],
    )

    result = run_cli(["run-all"], env={**cli_env, "RETAIL_API_URL": source.url})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: load: 5 line(s) quarantined; the others loaded: "
        f"{headers.relative_to(data_dir / 'bronze')}: 2 line(s) quarantined to {headers.name} "
        "under _rejected/load (line 2: datetime not an RFC 3339 date-time with an offset "
        "(YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)); the other 2 loaded"
    )
    assert quarantined(data_dir, headers) == [
        (2, "datetime not an RFC 3339 date-time with an offset (YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM or Z)"),
        (3, "id out of range (1 to 9223372036854775807)"),
    ]
    assert quarantined(data_dir, lines) == [
        (2, "product_sku contains a NUL character"),
        (3, "quantity out of range (1 to 2147483647)"),
        (4, "product_sku longer than 255 characters"),
    ]
    assert query(db_url, "select id from silver.sales_customer where id > 1000 order by 1") == [
        (1001,),
        (1003,),
    ]
    assert query(
        db_url, "select sale_id, line_no from silver.sales_product where sale_id > 1000 order by 1, 2"
    ) == [(1001, 1), (1003, 3)]
    # Gold was built from everything that did load, the mock's 50 sales included
    assert query(db_url, "select count(*) from gold.sales_item where sale_id > 1000") == [(2,)]
    assert query(db_url, "select count(distinct sale_id) from gold.sales_item") == [(52,)]
    assert query(
        db_url, "select path, quarantined_lines from meta.loaded_files where quarantined_lines > 0 order by 1"
    ) == [
        (str(headers.relative_to(data_dir / "bronze")), 2),
        (str(lines.relative_to(data_dir / "bronze")), 3),
    ]

    again = run_cli(["run-all"], env={**cli_env, "RETAIL_API_URL": source.url})
    assert again.returncode == 0, again.stderr


def modes(root: Path) -> tuple[set[str], set[str]]:
    """The permission bits of every directory (root included) and every file under root."""
    entries = [root, *root.rglob("*")]
    dirs = {oct(stat.S_IMODE(p.lstat().st_mode)) for p in entries if p.is_dir()}
    files = {oct(stat.S_IMODE(p.lstat().st_mode)) for p in entries if p.is_file()}
    return dirs, files


def test_transform_before_extract_leaves_everything_under_the_data_dir_private(
    tmp_path: Path, db_url: str
) -> None:
    data_dir = tmp_path / "fresh"  # does not exist yet: transform creates it
    result = run_cli(["transform"], env=cli(data_dir, db_url))
    assert result.returncode == 0, result.stderr
    assert (data_dir / "dbt" / "target" / "manifest.json").is_file()
    assert (data_dir / "dbt" / "logs" / "dbt.log").is_file()
    assert modes(data_dir) == ({"0o700"}, {"0o600"})


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (we run as root in CI); unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_one_line_exit_1_no_temp_file_and_the_cursor_on_durable_files(
    small_disk: Path, start_mock, cli_env: dict[str, str], db_url: str
) -> None:
    source = start_mock(sales=4_000)
    data_dir = small_disk / "data"
    env = {
        **cli_env,
        "RETAIL_API_URL": source.url,
        "RETAIL_DATA_DIR": str(data_dir),
        "RETAIL_PAGE_SIZE": "100",
    }
    result = run_cli(["extract"], env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: no space left (No space left on device); free space under RETAIL_DATA_DIR "
        "(`retailctl bronze prune`) and run again"
    ]
    assert not [p for p in data_dir.rglob("*") if p.name.endswith(".tmp")]
    ids = {h["id"] for h in bronze_rows(data_dir, "sales_customer")}
    assert 0 < len(ids) < 4_000
    assert cursor_of(db_url) == max(ids) + 1  # exactly past what is durable


def test_a_read_only_data_dir_is_exit_78_and_loading_from_it_still_works(
    small_disk: Path, cli_env: dict[str, str], db_url: str
) -> None:
    data_dir = small_disk / "data"
    write_bronze(data_dir, "sales_product", [line(1, 1)])
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    extract = run_cli(["extract", "--entity", "products"], env=cli_env | {"RETAIL_DATA_DIR": str(data_dir)})
    assert extract.returncode == 78
    assert extract.stderr.splitlines() == [
        f"error: cannot write: {data_dir / 'bronze' / 'products'} (Read-only file system); "
        "RETAIL_DATA_DIR must be a directory this user can write"
    ]
    loaded = run_cli(["load"], env=cli(data_dir, db_url))
    assert loaded.returncode == 0, loaded.stderr
    assert query(db_url, "select sale_id, amount from silver.sales_product") == [(1, Decimal("1.5"))]


def test_the_dbt_profile_written_by_an_older_version_becomes_private(tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "older"
    for name in ("profiles", "target", "logs"):
        (data_dir / "dbt" / name).mkdir(parents=True, mode=0o755)
        os.chmod(data_dir / "dbt" / name, 0o755)
    (data_dir / "dbt" / "profiles" / "profiles.yml").write_text("old: profile\n")
    os.chmod(data_dir / "dbt" / "profiles" / "profiles.yml", 0o644)
    os.chmod(data_dir, 0o700)
    os.chmod(data_dir / "dbt", 0o700)
    result = run_cli(["transform", "--select", "core"], env=cli(data_dir, db_url))
    assert result.returncode == 0, result.stderr
    assert modes(data_dir) == ({"0o700"}, {"0o600"})
    assert "env_var('RETAIL_DBT_HOST')" in (data_dir / "dbt" / "profiles" / "profiles.yml").read_text()


def test_names_extract_writes_round_trip() -> None:
    """The rule load checks names against is the one extract names files by."""
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    name = file_name(moment, "6f1c2a52-5d47-4c6b-9a53-3b1f0d3e9c11")
    parsed = parse_file_name(name)
    assert parsed is not None and (parsed.written_at, parsed.partition, parsed.ingestion_ts) == (
        moment,
        "dt=2026-03-04",
        "2026-03-04T05:06:07.890123+00:00",
    )
    for foreign in (
        "notes.ndjson",
        name.replace("-5d47-", "-5D47-"),
        name.replace("Z_", "_"),
        name.replace(".ndjson", ".json"),
        f"x{name}",
    ):
        assert parse_file_name(foreign) is None, foreign
