"""Bronze in an object store: extract, load, run-all, prune and their failures against a real
S3-compatible server (moto in server mode, its own process) on loopback, with real Postgres,
real HTTP and the real CLI."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mock_api import DataConfig
from retailctl.bronze_s3 import S3Store
from retailctl.config import load_settings
from retailctl.load import LoadResult
from retailctl.load import load as load_files
from retailctl.load.files import find_files, read_manifest
from retailctl.store.db import open_database
from tests.helpers import by_entity, cursor_of, extract, run_cli, settings_for, wait_until
from tests.helpers.s3 import SECRET_KEY, Bucket, FlakyProxy, MotoServer, aws_env
from tests.helpers.scripted_api import Gate, Reply, Request, ScriptedApi
from tests.test_pipeline import gold_figures, ground_truth

KEY = re.compile(
    r"^(_rejected/)?(customers|products|sales_customer|sales_product|sales)/dt=\d{4}-\d{2}-\d{2}/"
    r"\d{8}T\d{12}Z_[0-9a-f-]{36}\.ndjson$"
)


def s3_env(cli_env: dict[str, str], bucket: Bucket, **extra: str) -> dict[str, str]:
    return {**cli_env, **bucket.env, "RETAIL_BRONZE_URL": bucket.url, **extra}


def load_from(bucket: Bucket, data_dir: Path, db_url: str) -> LoadResult:
    settings = settings_for(data_dir, db_url, "http://x", RETAIL_BRONZE_URL=bucket.url)
    with open_database(settings) as database:
        return load_files(database, settings.bronze_location)


def silver_figures(db_url: str) -> tuple[int, int, Decimal]:
    with psycopg.connect(db_url) as conn:
        sales = conn.execute("select count(*) from silver.sales_customer").fetchone()[0]  # type: ignore[index]
        lines, amount = conn.execute("select count(*), sum(amount) from silver.sales_product").fetchone()  # type: ignore[misc]
    return sales, lines, amount


@pytest.mark.slow
def test_extract_load_then_run_all_with_bronze_in_the_bucket(
    start_mock, cli_env: dict[str, str], data_dir: Path, db_url: str, bucket: Bucket
) -> None:
    first = DataConfig(sales=1_500, invalid_rate=0.02)
    env = s3_env(cli_env, bucket, RETAIL_API_URL=start_mock(sales=1_500, invalid_rate=0.02).url)
    outputs = []
    for step in (["extract"], ["load"]):
        done = run_cli(step, env=env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    lines, amount, pairs = ground_truth(first)
    assert silver_figures(db_url) == (sum(figures[0] for figures in pairs.values()), lines, amount)

    keys = bucket.objects()
    assert keys and all(KEY.match(key) for key in keys), [k for k in keys if not KEY.match(k)]
    rejected = bucket.rows("sales", rejected=True)
    with psycopg.connect(db_url) as conn:
        logged = conn.execute("select rejected from meta.extract_log where entity = 'sales'").fetchone()[0]  # type: ignore[index]
        manifest = {row[0] for row in conn.execute("select path from meta.loaded_files")}
    assert logged == len(rejected) > 0 and all(r["_reject_reason"] for r in rejected)
    assert manifest == {k for k in keys if not k.startswith("_rejected/")}  # the same keys as on disk
    assert not (data_dir / "bronze").exists()

    grown = DataConfig(sales=2_100, invalid_rate=0.02)
    env["RETAIL_API_URL"] = start_mock(sales=2_100, invalid_rate=0.02).url
    run = run_cli(["run-all"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert gold_figures(db_url) == ground_truth(grown)  # every sale, to the cent
    verify = run_cli(["verify"], env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    full_test = run_cli(["test"], env=env)  # its verify lists the bucket for pruned files
    assert full_test.returncode == 0, full_test.stdout + full_test.stderr

    config = run_cli(["config"], env=env)
    assert f"RETAIL_BRONZE_URL\t{bucket.url}\tenvironment" in config.stdout.splitlines()
    with psycopg.connect(db_url) as conn:
        meta = "".join(
            str(row)
            for table in ("pipeline_runs", "loaded_files", "ingestion_state", "extract_log")
            for row in conn.execute(f"select * from meta.{table}")
        )
    for text in [*outputs, run.stdout, run.stderr, config.stdout, config.stderr, meta]:
        assert SECRET_KEY not in text


@pytest.mark.slow
def test_sigkill_mid_extraction_then_rerun_holds_every_sale_in_the_bucket(
    cli_env: dict[str, str], db_url: str, spawn, gate: Gate, bucket: Bucket
) -> None:
    first_stop, second_stop = Gate(), gate

    def hold_two_pages(request: Request) -> Reply | None:
        if request.path == "/sales" and request.number in (12, 30):
            (first_stop if request.number == 12 else second_stop).hold()
        return None

    with ScriptedApi(hold_two_pages, DataConfig(sales=6_000)) as api:
        # no lookback: the second run starts at the cursor, so the request numbers below hold
        env = s3_env(
            cli_env, bucket, RETAIL_API_URL=api.url, RETAIL_PAGE_SIZE="100", RETAIL_SALES_LOOKBACK="0"
        )
        # Chunks of 8 pages: page 12 is asked for once the first chunk's objects are PUT and
        # the cursor moved past them, page 30 in the second run; each kill lands mid-chunk.
        for stop, cursor in ((first_stop, 801), (second_stop, 2_401)):
            victim = spawn(["extract", "--entity", "sales"], env)
            wait_until(
                lambda stop=stop, cursor=cursor: stop.held.is_set() and cursor_of(db_url) == cursor,
                60,
                f"the extraction to be mid-chunk past cursor {cursor}",
                alive=victim,
            )
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            stop.open()
        partial = {h["id"] for h in bucket.rows("sales_customer")}
        assert 800 <= len(partial) < 6_000, "the kill landed mid-extraction"
        rerun = run_cli(["extract", "--entity", "sales"], env=env)
    assert rerun.returncode == 0, rerun.stderr
    ids = {h["id"] for h in bucket.rows("sales_customer")}
    assert ids == set(range(1, 6_001))
    assert all(KEY.match(key) for key in bucket.objects())  # no temporary object left
    assert bucket.unfinished_uploads() == []
    lines = bucket.rows("sales_product")  # every object parses: none is half-written
    assert {line["sale_id"] for line in lines} == ids


def test_a_changed_loaded_object_is_refused_and_the_restored_one_accepted(
    start_mock, data_dir: Path, db_url: str, bucket: Bucket
) -> None:
    settings = settings_for(data_dir, db_url, start_mock(sales=300).url, RETAIL_BRONZE_URL=bucket.url)
    extract(settings, entities=["sales"])
    assert load_from(bucket, data_dir, db_url).errors == []
    (header,) = bucket.objects("sales_customer/")
    original = bucket.read(header)
    bucket.put(header, original.replace(b'"total_amount":', b'"total_amount":1', 1))

    again = load_from(bucket, data_dir, db_url)
    assert again.errors == [
        f"{header}: changed after it was loaded (sha256 differs); "
        "bronze is append-only: restore the file or move it aside"
    ]
    assert again.tables["sales_customer"].files == 0
    bucket.put(header, original)  # the same bytes again: the same version, nothing to do
    assert load_from(bucket, data_dir, db_url).errors == []


def test_prune_deletes_only_old_loaded_objects(
    cli_env: dict[str, str], data_dir: Path, db_url: str, bucket: Bucket
) -> None:
    now = datetime.now(UTC)
    line = {"product_sku": "S", "quantity": 1, "amount": 1.0}
    old_loaded = bucket.write(
        "sales_product", [{"sale_id": 1, "line_no": 1, **line}], now - timedelta(days=40)
    )
    recent = bucket.write("sales_product", [{"sale_id": 2, "line_no": 1, **line}], now - timedelta(days=2))
    assert load_from(bucket, data_dir, db_url).tables["sales_product"].files == 2
    old_unloaded = bucket.write("sales_product", [{"sale_id": 3}], now - timedelta(days=50))
    rejected = bucket.write("_rejected/sales", [{"id": 4, "_reject_reason": "x"}], now - timedelta(days=60))
    env = s3_env(cli_env, bucket)

    dry = run_cli(["bronze", "prune", "--older-than", "30d", "--dry-run"], env=env)
    assert dry.stdout.splitlines() == [f"would delete {old_loaded}", "would delete 1 file(s), 0.0 MB"]
    assert old_loaded in bucket.objects()
    real = run_cli(["bronze", "prune", "--older-than", "30d"], env=env)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines()[0] == f"deleted {old_loaded}"
    assert bucket.objects() == sorted([recent, old_unloaded, rejected])
    again = run_cli(["bronze", "prune", "--older-than", "30d"], env=env)
    assert again.stdout.splitlines() == ["deleted 0 file(s), 0.0 MB"]


def test_load_lists_from_the_day_before_the_newest_loaded_partition(
    data_dir: Path, db_url: str, bucket: Bucket
) -> None:
    now = datetime.now(UTC)
    line = {"product_sku": "S", "quantity": 1, "amount": 1.0}
    for days, sale_id in ((400, 1), (3, 2), (0, 3)):
        bucket.write(
            "sales_product", [{"sale_id": sale_id, "line_no": 1, **line}], now - timedelta(days=days)
        )
    assert load_from(bucket, data_dir, db_url).tables["sales_product"].files == 3  # first load: all

    listed: list[tuple[str, str | None]] = []

    class Recording(S3Store):
        def list(self, dataset: str, since: str | None = None) -> Any:
            listed.append((dataset, since))
            return super().list(dataset, since)

    store = Recording.from_url(bucket.url)
    settings = settings_for(data_dir, db_url, "http://x", RETAIL_BRONZE_URL=bucket.url)
    with open_database(settings) as database, database.connect(autocommit=True) as conn:
        found, problems = find_files(store, read_manifest(conn))
    day_before = f"dt={now - timedelta(days=1):%Y-%m-%d}"
    assert dict(listed)["sales_product"] == day_before
    assert [file.relative for file in found if file.table.dataset == "sales_product"] == bucket.objects(
        "sales_product/"
    )[-1:]
    assert dict(listed)["sales_customer"] is None and problems == []  # nothing loaded there yet


def test_transient_store_errors_are_retried(
    start_mock, data_dir: Path, db_url: str, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FlakyProxy(bucket.endpoint, every=3) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        settings = settings_for(data_dir, db_url, start_mock(sales=900).url, RETAIL_BRONZE_URL=bucket.url)
        assert by_entity(extract(settings))["sales"].records == 900
        loaded = load_from(bucket, data_dir, db_url)
    assert proxy.refused > 3 and loaded.errors == []
    assert silver_figures(db_url)[0] == 900


def test_a_missing_bucket_is_exit_78_naming_it(cli_env: dict[str, str], s3_server: str) -> None:
    missing = Bucket(s3_server)  # never created
    env = s3_env(cli_env, missing)
    expected = (
        f"error: the bucket {missing.name!r} does not exist (RETAIL_BRONZE_URL={missing.url}): "
        "create it, or fix RETAIL_BRONZE_URL or AWS_ENDPOINT_URL"
    )
    for step in (["extract"], ["load"]):
        done = run_cli(step, env=env)
        assert done.returncode == 78, done.stderr
        assert expected in done.stderr.splitlines(), done.stderr


def test_rejected_credentials_are_exit_77(cli_env: dict[str, str], data_dir: Path) -> None:
    with MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as checking:  # knows no key
        bucket = Bucket(checking.url)
        env = s3_env(cli_env, bucket)
        for step in (["extract"], ["load"]):
            done = run_cli(step, env=env)
            assert done.returncode == 77, done.stderr
            assert (
                f"error: the object store refused the AWS credentials for {bucket.url} (InvalidAccessKeyId)"
                f": check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the bucket's policy"
            ) in done.stderr.splitlines(), done.stderr
            assert SECRET_KEY not in done.stdout + done.stderr
    assert not (data_dir / "bronze").exists()


def test_an_unreachable_store_is_exit_69_after_retries(cli_env: dict[str, str]) -> None:
    closed = Bucket(aws_env("http://127.0.0.1:9")["AWS_ENDPOINT_URL"])
    done = run_cli(["extract"], env=s3_env(cli_env, closed, AWS_MAX_ATTEMPTS="2"))
    assert done.returncode == 69, done.stderr
    assert f"error: the object store for {closed.url} is unreachable after retries" in done.stderr


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("gs://bucket/bronze", "gs:// is not supported: expected a local path or s3://bucket/prefix"),
        ("s3://", "expected s3://bucket or s3://bucket/prefix"),
        (
            "s3://AKIA:secret@bucket/x",
            "credentials do not belong in the URL: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile",
        ),
    ],
)
def test_a_bronze_url_that_is_not_one_is_exit_78(url: str, reason: str, cli_env: dict[str, str]) -> None:
    done = run_cli(["config"], env={**cli_env, "RETAIL_BRONZE_URL": url})
    assert done.returncode == 78
    shown = "'s3://AKIA:***@bucket/x'" if "secret" in url else repr(url)
    assert f"error: RETAIL_BRONZE_URL={shown} is invalid: {reason}" in done.stderr.splitlines()


def test_the_bronze_url_defaults_to_the_data_dir_and_takes_a_path(tmp_path: Path) -> None:
    default = load_settings(environ={"RETAIL_DATA_DIR": str(tmp_path)}, env_file=tmp_path / "none")
    assert default.bronze_location == str(tmp_path / "bronze")
    assert default.display_value("bronze_url") == f"(unset: {tmp_path / 'bronze'})"
    elsewhere = load_settings(
        environ={"RETAIL_DATA_DIR": str(tmp_path), "RETAIL_BRONZE_URL": f"file://{tmp_path}/shared/"},
        env_file=tmp_path / "none",
    )
    assert elsewhere.bronze_location == str(tmp_path / "shared") == str(elsewhere.bronze_dir)
