"""`retailctl verify`: the layers agree after a real run, and each kind of tampering is named.

One real `run-all` on the mock builds a template database; each test works on its own copy
(`create database … template …`), so a tampered layer never leaks into the next test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from mock_api import BackgroundServer, DataConfig, MockConfig, RetailData
from retailctl.bronze_files import NdjsonFile, file_name, partition_dir
from retailctl.errors import BronzeFileError
from retailctl.extract import records
from retailctl.store.lock import LOCK_NAMESPACE, PIPELINE_LOCK_ID
from retailctl.verify_bronze import IdSet, scan_bronze
from tests.helpers import API_KEY, RETAILCTL, database_url, extract, run_cli, settings_for, wait_until

CONFIG = DataConfig(sales=3_000, invalid_rate=0.01)

pytestmark = pytest.mark.xdist_group("verify")  # one xdist worker builds `built` once

Truth = dict[date, tuple[int, int, Decimal]]


def utc_day(moment: str) -> date:
    return datetime.fromisoformat(moment).astimezone(UTC).date()


def line_amounts(sale: dict[str, Any]) -> Decimal:
    return sum((records.decimal_of(item["amount"]) for item in sale["items"]), Decimal(0))


def truth_by_day(config: DataConfig) -> Truth:
    """Per UTC day: valid sales, their lines, the sum of line amounts, from the generator."""
    data = RetailData(config)
    days: dict[date, list[Any]] = {}
    for k in range(config.sales):
        sale = data.sale(k)
        if records.sale_reject_reason(sale):
            continue
        figures = days.setdefault(utc_day(sale["datetime"]), [0, 0, Decimal(0)])
        figures[0] += 1
        figures[1] += len(sale["items"])
        figures[2] += line_amounts(sale)
    return {day: (sales, lines, amount) for day, (sales, lines, amount) in days.items()}


def agree_line(truth: Truth) -> str:
    sales, lines = sum(t[0] for t in truth.values()), sum(t[1] for t in truth.values())
    amount = sum((t[2] for t in truth.values()), Decimal(0))
    return (
        f"all {len(truth)} days agree across bronze, silver, fact and mart: {sales} sales, "
        f"{lines} lines, {amount:.2f}"
    )


@dataclass(frozen=True)
class Built:
    admin_url: str
    template: str
    data_dir: Path
    api_url: str
    truth: Truth
    invalid_ids: frozenset[int]


@pytest.fixture(scope="module")
def built(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """A real `run-all` against the mock, into a template database."""
    template = f"retailctl_verify_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{template}"')
    data_dir = tmp_path_factory.mktemp("verify-data")
    data = RetailData(CONFIG)
    invalid = frozenset(
        sale["id"] for sale in map(data.sale, range(CONFIG.sales)) if records.sale_reject_reason(sale)
    )
    try:
        with BackgroundServer(MockConfig(data=CONFIG, api_key=API_KEY)) as server:
            result = run_cli(
                ["run-all"], env=environment(database_url(pg_admin_url, template), data_dir, server.url)
            )
            assert result.returncode == 0, result.stderr
            yield Built(pg_admin_url, template, data_dir, server.url, truth_by_day(CONFIG), invalid)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{template}" with (force)')


def environment(db_url: str, data_dir: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_")}
    env.update(
        {
            "RETAIL_DATABASE_URL": db_url,
            "RETAIL_DATA_DIR": str(data_dir),
            "RETAIL_API_KEY": API_KEY,
            "RETAIL_HTTP_RETRIES": "8",
            **extra,
        }
    )
    if api_url is not None:
        env["RETAIL_API_URL"] = api_url
    return env


@pytest.fixture
def copy(built: Built) -> Iterator[str]:
    """A copy of the built database for one test."""
    name = f"retailctl_verify_copy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(built.admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}" template "{built.template}"')
    try:
        yield database_url(built.admin_url, name)
    finally:
        with psycopg.connect(built.admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def verify(built: Built, db_url: str, *args: str, api_url: str | None = "built", **extra: str) -> Any:
    api = built.api_url if api_url == "built" else api_url
    return run_cli(["verify", *args], env=environment(db_url, built.data_dir, api, **extra))


def source_line(built: Built, total: int | None = None, pending: int = 0) -> str:
    valid = sum(t[0] for t in built.truth.values())
    total = CONFIG.sales if total is None else total
    held = valid + len(built.invalid_ids) + pending
    verdict = "agree" if total == held else "differ"
    relation = "=" if total == held else f"!= {held} ="
    return (
        f"source: {verdict}: total_items {total} {relation} {valid} in silver + "
        f"{len(built.invalid_ids)} rejected + {pending} not extracted yet"
    )


def a_valid_sale(built: Built, sale_id: int) -> dict[str, Any]:
    sale = RetailData(CONFIG).sale(sale_id - 1)
    assert sale_id not in built.invalid_ids
    return sale


def difference_row(
    day: date, layer: str, figures: tuple[int, int, Decimal], reference: tuple[int, int, Decimal]
) -> str:
    return "\t".join(
        map(
            str,
            (
                day,
                layer,
                figures[0],
                figures[1],
                f"{figures[2]:.2f}",
                reference[0],
                reference[1],
                f"{reference[2]:.2f}",
            ),
        )
    )


# -- the layers agree ----------------------------------------------------------------------------


def test_after_run_all_every_day_agrees(built: Built, copy: str) -> None:
    result = verify(built, copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [source_line(built), agree_line(built.truth)]
    assert result.stderr == ""


def test_json_document_holds_the_ground_truth(built: Built, copy: str) -> None:
    result = verify(built, copy, "--json")
    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    sales = sum(t[0] for t in built.truth.values())
    lines = sum(t[1] for t in built.truth.values())
    amount = f"{sum((t[2] for t in built.truth.values()), Decimal(0)):.2f}"
    expected = {"sales": sales, "lines": lines, "amount": amount}
    assert document["ok"] is True and document["differences"] == [] and document["missing"] == []
    assert document["days"] == len(built.truth)
    assert document["totals"] == {"bronze": expected, "silver": expected, "fact": expected, "mart": expected}
    assert document["source"] == {
        "status": "agree",
        "detail": source_line(built).removeprefix("source: agree: "),
        "total_items": CONFIG.sales,
        "silver": sales,
        "rejected": len(built.invalid_ids),
        "not_extracted": 0,
    }
    assert document["summary"] == agree_line(built.truth)


# -- each layer tampered with ---------------------------------------------------------------------


def test_a_deleted_fact_line_is_named_with_its_day(built: Built, copy: str) -> None:
    sale = a_valid_sale(built, 100)
    day = utc_day(sale["datetime"])
    with psycopg.connect(copy) as conn:
        deleted = conn.execute("delete from gold.sales_item where sale_id = 100 and line_no = 1")
        assert deleted.rowcount == 1
    result = verify(built, copy)
    assert result.returncode == 3
    reference = built.truth[day]
    line_amount = records.decimal_of(sale["items"][0]["amount"])
    fact = (reference[0] - (len(sale["items"]) == 1), reference[1] - 1, reference[2] - line_amount)
    assert result.stdout.splitlines() == [
        "days that differ",
        "day\tlayer\tsales\tlines\tamount\tbronze sales\tbronze lines\tbronze amount",
        difference_row(day, "fact", fact, reference),
        source_line(built),
    ]
    assert result.stderr == f"error: layers disagree on 1 of {len(built.truth)} day(s): {day} (fact)\n"


def test_with_json_a_difference_is_an_error_object_holding_the_result(built: Built, copy: str) -> None:
    sale = a_valid_sale(built, 100)
    day = utc_day(sale["datetime"])
    with psycopg.connect(copy) as conn:
        conn.execute("delete from gold.sales_item where sale_id = 100 and line_no = 1")
    result = verify(built, copy, "--json")
    assert result.returncode == 3
    error = orjson.loads(result.stdout)["error"]
    message = f"layers disagree on 1 of {len(built.truth)} day(s): {day} (fact)"
    assert (error["code"], error["step"], error["message"]) == (3, "verify", message)
    reference = built.truth[day]
    line_amount = records.decimal_of(sale["items"][0]["amount"])
    assert error["details"]["ok"] is False
    assert error["details"]["differences"] == [
        {
            "day": f"{day}",
            "layer": "fact",
            "sales": reference[0] - (len(sale["items"]) == 1),
            "lines": reference[1] - 1,
            "amount": f"{reference[2] - line_amount:.2f}",
            "bronze": {"sales": reference[0], "lines": reference[1], "amount": f"{reference[2]:.2f}"},
        }
    ]


def test_a_changed_mart_amount_is_named_with_its_day(built: Built, copy: str) -> None:
    with psycopg.connect(copy) as conn:
        row = conn.execute(
            "update gold.mart_sales_by_customer set total_revenue = total_revenue + 0.01 "
            "where (customer_id, day) = (select customer_id, day from gold.mart_sales_by_customer "
            "order by day desc, customer_id limit 1) returning day"
        ).fetchone()
    assert row is not None
    day = row[0]
    result = verify(built, copy)
    assert result.returncode == 3
    reference = built.truth[day]
    assert (
        difference_row(day, "mart", (*reference[:2], reference[2] + Decimal("0.01")), reference)
        in result.stdout.splitlines()
    )
    assert result.stderr == f"error: layers disagree on 1 of {len(built.truth)} day(s): {day} (mart)\n"


def test_a_silver_line_added_by_hand_is_named_with_its_day(built: Built, copy: str) -> None:
    sale = a_valid_sale(built, 250)
    day = utc_day(sale["datetime"])
    with psycopg.connect(copy) as conn:
        conn.execute(
            "insert into silver.sales_product select sale_id, 9, product_sku, 1, 1.23, "
            "_ingestion_ts, _batch_id, _loaded_at from silver.sales_product "
            "where sale_id = 250 and line_no = 1"
        )
    result = verify(built, copy)
    assert result.returncode == 3
    reference = built.truth[day]
    silver = (reference[0], reference[1] + 1, reference[2] + Decimal("1.23"))
    assert difference_row(day, "silver", silver, reference) in result.stdout.splitlines()
    assert result.stderr == f"error: layers disagree on 1 of {len(built.truth)} day(s): {day} (silver)\n"


def test_a_silver_line_without_its_sale_is_named(built: Built, copy: str) -> None:
    with psycopg.connect(copy) as conn:
        conn.execute(
            "insert into silver.sales_product select 9999999, 1, product_sku, 1, 4.56, "
            "_ingestion_ts, _batch_id, _loaded_at from silver.sales_product limit 1"
        )
    result = verify(built, copy)
    assert result.returncode == 3
    assert "no header\tsilver\t0\t1\t4.56\t0\t0\t0.00" in result.stdout.splitlines()
    assert result.stderr == "error: silver holds 1 line(s) whose sale has no header\n"


def test_since_leaves_out_the_days_before(built: Built, copy: str) -> None:
    sale = a_valid_sale(built, 100)
    day = utc_day(sale["datetime"])
    with psycopg.connect(copy) as conn:
        conn.execute("delete from gold.sales_item where sale_id = 100")
    later = {d: t for d, t in built.truth.items() if d > day}
    result = verify(built, copy, "--since", f"{day + timedelta(days=1)}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == agree_line(later)
    assert verify(built, copy, "--since", f"{day}").returncode == 3


def test_since_must_be_a_day(built: Built, copy: str) -> None:
    result = verify(built, copy, "--since", "2026-13-01")
    assert result.returncode == 2
    assert "Invalid value for '--since'" in result.stderr


def test_a_missing_gold_model_is_a_difference(built: Built, pg_admin_url: str, db_url: str) -> None:
    loaded = run_cli(["load"], env=environment(db_url, built.data_dir, built.api_url))
    assert loaded.returncode == 0, loaded.stderr
    result = verify(built, db_url)
    assert result.returncode == 3
    assert result.stdout.splitlines()[:2] == [
        "missing layer: fact: gold.sales_item does not exist (run `retailctl transform`)",
        "missing layer: mart: gold.mart_sales_by_customer does not exist (run `retailctl transform`)",
    ]
    assert result.stderr == (
        "error: fact: gold.sales_item does not exist (run `retailctl transform`); "
        "mart: gold.mart_sales_by_customer does not exist (run `retailctl transform`)\n"
    )


def test_another_run_holding_the_lock_is_exit_75(built: Built, copy: str) -> None:
    with psycopg.connect(copy, autocommit=True, application_name="retailctl run-all (test)") as conn:
        conn.execute("select pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, PIPELINE_LOCK_ID))
        result = verify(built, copy)
    assert result.returncode == 75
    assert result.stderr.startswith("error: another retailctl run holds the lock: ")
    assert result.stderr.endswith("; try again later\n") and result.stdout == ""


def test_sigterm_while_a_layer_is_summed_cancels_the_query_and_exits_143(built: Built, copy: str) -> None:
    env = environment(copy, built.data_dir, None)
    waiting = (
        "select count(*) from pg_stat_activity where datname = current_database() "
        "and application_name like 'retailctl %%verify' and wait_event_type = %s"
    )
    with psycopg.connect(copy) as blocker, psycopg.connect(copy, autocommit=True) as watcher:
        blocker.execute("lock table gold.mart_sales_by_customer in access exclusive mode")
        process = subprocess.Popen(
            [*RETAILCTL, "verify"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(  # the mart's query waits on the lock
                lambda: watcher.execute(waiting, ("Lock",)).fetchone() == (1,),
                60,
                "verify's query to wait on the lock",
                alive=process,
            )
            process.send_signal(signal.SIGTERM)
            # the lock is still held: exits once cancelled (120 s: a loaded CI machine is slow)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 143
    assert stderr == "error: stopped by SIGTERM; the open transaction was rolled back\n"
    assert stdout == ""


# -- the source's count ------------------------------------------------------------------------


def test_sales_not_extracted_yet_are_counted_from_the_cursor(built: Built, copy: str, start_mock) -> None:  # type: ignore[no-untyped-def]
    ahead = start_mock(**{**vars(CONFIG), "sales": CONFIG.sales + 10})
    result = verify(built, copy, api_url=ahead.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == source_line(built, total=CONFIG.sales + 10, pending=10)


def test_a_source_with_fewer_sales_than_retailctl_holds_differs(built: Built, copy: str, start_mock) -> None:  # type: ignore[no-untyped-def]
    fewer = start_mock(**{**vars(CONFIG), "sales": CONFIG.sales - 10})
    result = verify(built, copy, api_url=fewer.url)
    assert result.returncode == 3
    line = source_line(built, total=CONFIG.sales - 10)
    assert result.stdout.splitlines() == [line]
    assert result.stderr == f"error: source: {line.removeprefix('source: differ: ')}\n"


def test_an_unreachable_source_is_reported_not_fatal(built: Built, copy: str) -> None:
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        result = verify(built, copy, api_url=closed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("source: not checked: source unreachable (ConnectError: ")
    assert result.stdout.splitlines()[1] == agree_line(built.truth)


def test_a_rejected_key_is_reported_and_never_printed(built: Built, copy: str) -> None:
    result = verify(built, copy, RETAIL_API_KEY="WRONG_KEY_5a4b3c")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "source: not checked: the API key was rejected (HTTP 401)"
    assert "WRONG_KEY_5a4b3c" not in result.stdout + result.stderr


def test_without_an_api_the_source_is_not_checked(built: Built, copy: str) -> None:
    result = verify(built, copy, api_url=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "source: not checked: RETAIL_API_URL is not set",
        agree_line(built.truth),
    ]


# -- the full `retailctl test` includes verify ---------------------------------------------------


def full_test(built: Built, db_url: str, *args: str) -> Any:
    return run_cli(["test", *args], env=environment(db_url, built.data_dir, built.api_url))


@pytest.mark.slow  # runs every dbt test
def test_the_full_test_verifies_the_layers_and_passes_when_they_agree(built: Built, copy: str) -> None:
    result = full_test(built, copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [source_line(built), agree_line(built.truth)]
    document = orjson.loads(full_test(built, copy, "--json").stdout)
    assert document["verify"]["ok"] is True and document["verify"]["summary"] == agree_line(built.truth)
    assert document["commands"] and all(c["success"] for c in document["commands"])


@pytest.mark.slow  # runs every dbt test
def test_the_full_test_fails_naming_the_day_and_layer_of_a_deleted_fact_line(built: Built, copy: str) -> None:
    sale = a_valid_sale(built, 100)
    day = utc_day(sale["datetime"])
    with psycopg.connect(copy) as conn:
        conn.execute("delete from gold.sales_item where sale_id = 100 and line_no = 1")
    result = full_test(built, copy)
    assert result.returncode == 3
    reference = built.truth[day]
    line_amount = records.decimal_of(sale["items"][0]["amount"])
    fact = (reference[0] - (len(sale["items"]) == 1), reference[1] - 1, reference[2] - line_amount)
    assert difference_row(day, "fact", fact, reference) in result.stdout.splitlines()
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: ")  # a dbt test may name it too; verify always does, last
    assert error.endswith(f"verify: layers disagree on 1 of {len(built.truth)} day(s): {day} (fact)")

    as_json = full_test(built, copy, "--json")
    assert as_json.returncode == 3
    details = orjson.loads(as_json.stdout)["error"]["details"]
    assert [(d["day"], d["layer"], d["lines"]) for d in details["verify"]["differences"]] == [
        (f"{day}", "fact", reference[1] - 1)
    ]
    assert details["commands"]  # the dbt tests' results beside verify's


@pytest.mark.slow  # runs dbt tests
def test_test_changed_is_the_hourly_check_and_skips_verify(built: Built, copy: str) -> None:
    with psycopg.connect(copy) as conn:  # an old row: not written since the last passing test
        conn.execute("delete from gold.sales_item where sale_id = 100 and line_no = 1")
    result = full_test(built, copy, "--changed", "--json")
    assert result.returncode == 0, result.stderr
    assert "verify" not in orjson.loads(result.stdout)


# -- the bronze reference ---------------------------------------------------------------------------


def header(sale_id: int, moment: str, customer: str = "C000001") -> dict[str, Any]:
    return {"id": sale_id, "datetime": moment, "total_amount": 0, "customer_id": customer}


def line(sale_id: int, line_no: int, amount: float | int) -> dict[str, Any]:
    return {
        "sale_id": sale_id,
        "line_no": line_no,
        "product_sku": "SKU-00001",
        "quantity": 1,
        "amount": amount,
    }


def write_batch(
    data_dir: Path, moment: datetime, headers: list[dict[str, Any]], lines: list[dict[str, Any]]
) -> None:
    """One batch as extract writes it: both files with one name (time stamp and batch id)."""
    batch = str(uuid.uuid4())
    stamp = {"_ingestion_ts": moment.isoformat(), "_batch_id": batch}
    for entity, rows in (("sales_customer", headers), ("sales_product", lines)):
        ndjson = NdjsonFile(partition_dir(data_dir / "bronze", entity, moment), file_name(moment, batch))
        for row in rows:
            ndjson.write({**row, **stamp})
        ndjson.commit()


def test_the_latest_version_of_a_sale_counts_with_its_own_lines(tmp_path: Path) -> None:
    old, new = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC)
    write_batch(
        tmp_path,
        old,
        [header(7, "2026-01-05T23:30:00+00:00"), header(8, "2026-01-05T10:00:00+00:00")],
        [line(7, 1, 10.1), line(7, 2, 20.2), line(7, 3, 30.3), line(8, 1, 5)],
    )
    # sale 7 corrected: another day (23:30 at -02:00 is the next UTC day), a line fewer
    write_batch(
        tmp_path, new, [header(7, "2026-01-05T23:30:00-02:00")], [line(7, 1, 10.1), line(7, 2, 25.25)]
    )
    scan = scan_bronze(tmp_path / "bronze")
    assert {day: (f.sales, f.lines, f.amount) for day, f in scan.days.items()} == {
        date(2026, 1, 5): (1, 1, Decimal(5)),
        date(2026, 1, 6): (1, 2, Decimal("35.35")),
    }
    assert (scan.files, scan.sales) == (2, 2)
    since = scan_bronze(tmp_path / "bronze", since=date(2026, 1, 6))
    assert list(since.days) == [date(2026, 1, 6)]


def test_a_sale_twice_in_one_file_counts_once_as_its_last_line(tmp_path: Path) -> None:
    write_batch(
        tmp_path,
        datetime(2026, 2, 1, tzinfo=UTC),
        [header(3, "2026-01-01T12:00:00+00:00"), header(3, "2026-01-02T12:00:00+00:00")],
        [line(3, 1, 1.5), line(3, 2, 2.5), line(3, 1, 1.25)],
    )
    scan = scan_bronze(tmp_path / "bronze")
    assert {day: (f.sales, f.lines, f.amount) for day, f in scan.days.items()} == {
        date(2026, 1, 2): (1, 2, Decimal("3.75"))
    }


def test_a_malformed_bronze_line_names_its_file_and_line(tmp_path: Path) -> None:
    write_batch(
        tmp_path, datetime(2026, 2, 1, tzinfo=UTC), [header(1, "2026-01-01T00:00:00Z")], [line(1, 1, 1)]
    )
    path = next((tmp_path / "bronze" / "sales_customer").rglob("*.ndjson"))
    path.write_bytes(path.read_bytes() + b'{"id": 2, "datetime": \n')
    with pytest.raises(BronzeFileError) as raised:
        scan_bronze(tmp_path / "bronze")
    relative = path.relative_to(tmp_path / "bronze")
    assert str(raised.value).startswith(f"{relative}: line 2: not valid JSON: ")


def test_id_set_holds_dense_and_sparse_ids() -> None:
    ids = IdSet()
    assert [ids.add(v) for v in (1, 2, 1, 65_536, 2**40, 2**40, 65_535)] == [
        True,
        True,
        False,
        True,
        True,
        False,
        True,
    ]
    assert ids.count == 5


def test_the_bronze_reference_of_a_corrected_source_is_its_ground_truth(
    db_url: str, tmp_path: Path, start_mock
) -> None:  # type: ignore[no-untyped-def]
    base = DataConfig(sales=1_500)
    corrected = DataConfig(sales=1_500, corrections=40, correction_version=1)
    settings = settings_for(tmp_path, db_url, start_mock(**vars(base)).url)
    extract(settings, entities=["sales"])
    settings = settings_for(tmp_path, db_url, start_mock(**vars(corrected)).url)
    extract(settings, entities=["sales"], from_id=1)  # everything read again, corrected
    kinds = {c.kind for c in RetailData(corrected).corrections()}
    assert kinds == {"customer", "day", "line_removed", "quantity"}
    scan = scan_bronze(tmp_path / "bronze")
    assert (
        {day: (f.sales, f.lines, f.amount) for day, f in scan.days.items()}
        == truth_by_day(corrected)
        != truth_by_day(base)
    )


def test_after_a_prune_the_days_bronze_lost_are_named_and_since_skips_them(
    db_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    write_batch(
        tmp_path, old, [header(1, f"{old - timedelta(days=1):%Y-%m-%dT%H:%M:%S}+00:00")], [line(1, 1, 2.5)]
    )
    write_batch(
        tmp_path, recent, [header(2, f"{recent:%Y-%m-%dT%H:%M:%S}+00:00")], [line(2, 1, 3.5), line(2, 2, 1)]
    )
    env = environment(db_url, tmp_path, None)
    for step in (["load"], ["transform"], ["bronze", "prune", "--older-than", "30d"]):
        done = run_cli(step, env=env)
        assert done.returncode == 0, done.stderr
    complete = old.date() + timedelta(days=1)
    result = run_cli(["verify"], env=env)
    assert result.returncode == 3
    assert result.stderr.splitlines()[0] == (
        f"warning: 1 loaded sales file(s) were pruned from bronze: days before {complete} can "
        f"differ for that alone; pass --since {complete}"
    )
    lost = (old - timedelta(days=1)).date()
    assert [row.split("\t")[:2] for row in result.stdout.splitlines()[2:5]] == [
        [f"{lost}", "silver"],
        [f"{lost}", "fact"],
        [f"{lost}", "mart"],
    ]
    result = run_cli(["verify", "--since", f"{complete}"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "all 1 days agree across bronze, silver, fact and mart: 1 sales, 2 lines, 4.50"
    )
    # the full test verifies the days bronze still holds whole: a prune never fails it
    tested = run_cli(["test"], env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.splitlines()[-1] == result.stdout.splitlines()[-1]
