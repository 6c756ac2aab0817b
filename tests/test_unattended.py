"""Running unattended: bronze retention, the cron, systemd and logrotate files, the docs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from retailctl import schedule
from tests.helpers import API_KEY, load, run_cli, write_bronze

ROOT = Path(__file__).resolve().parents[1]


def env_for(data_dir: Path, db_url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "RETAIL_DATABASE_URL": db_url,
        "RETAIL_API_URL": "http://x",
        "RETAIL_DATA_DIR": str(data_dir),
    }


def test_prune_deletes_only_old_loaded_files(data_dir: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    old_loaded = write_bronze(
        data_dir,
        "sales_product",
        [{"sale_id": 1, "line_no": 1, "product_sku": "S", "quantity": 1, "amount": 1.0}],
        now - timedelta(days=40),
    )
    recent_loaded = write_bronze(
        data_dir,
        "sales_product",
        [{"sale_id": 2, "line_no": 1, "product_sku": "S", "quantity": 1, "amount": 1.0}],
        now - timedelta(days=2),
    )
    load(data_dir, db_url)
    old_unloaded = write_bronze(data_dir, "sales_product", [{"sale_id": 3}], now - timedelta(days=50))
    rejected = write_bronze(
        data_dir, "_rejected/sales", [{"id": 4, "_reject_reason": "x"}], now - timedelta(days=60)
    )
    env = env_for(data_dir, db_url)

    dry = run_cli(["bronze", "prune", "--older-than", "30d", "--dry-run"], env=env)
    relative = old_loaded.relative_to(data_dir / "bronze")
    assert dry.stdout.splitlines()[0] == f"would delete {relative}"
    assert old_loaded.exists()

    real = run_cli(["bronze", "prune", "--older-than", "30d"], env=env)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines()[0] == f"deleted {relative}"
    assert not old_loaded.exists() and not old_loaded.parent.exists()
    assert recent_loaded.exists() and old_unloaded.exists() and rejected.exists()
    after = load(data_dir, db_url)  # the pruned file is not missed; the other's line quarantined
    assert after.errors == []
    assert after.quarantined == [
        f"{old_unloaded.relative_to(data_dir / 'bronze')}: 1 line(s) quarantined to "
        f"{old_unloaded.name} under _rejected/load (line 1: missing field 'line_no'); the other 0 loaded"
    ]
    with psycopg.connect(db_url) as conn:  # the manifest keeps the history
        assert conn.execute("select count(*) from meta.loaded_files").fetchone() == (3,)


def test_prune_refuses_a_bad_age(data_dir: Path, db_url: str) -> None:
    result = run_cli(["bronze", "prune", "--older-than", "soon"], env=env_for(data_dir, db_url))
    assert result.returncode == 2  # a usage error since the exit-code review
    assert "Invalid value for '--older-than': 'soon' is not an age" in result.stderr


def test_checked_in_schedule_files_are_what_the_command_renders() -> None:
    install = schedule.Install(
        Path("/srv/retailctl"),
        Path("/srv/retailctl/data"),
        ["/srv/retailctl/.venv/bin/retailctl"],
        "retailctl",
    )
    assert (ROOT / "crontab.example").read_text() == schedule.cron(install)
    assert (ROOT / "deploy" / "logrotate" / "retailctl").read_text() == schedule.logrotate(install)
    units = schedule.systemd_units(install)
    assert sorted(units) == sorted(path.name for path in (ROOT / "deploy" / "systemd").iterdir())
    for name, text in units.items():
        assert (ROOT / "deploy" / "systemd" / name).read_text() == text


def cron_lines(text: str) -> list[str]:
    """The commands of a crontab: its non-comment lines without the five time fields."""
    return [line.split(" ", 5)[5] for line in text.splitlines() if line and not line.startswith("#")]


def test_schedule_cron_fills_in_this_install(tmp_path: Path) -> None:
    result = run_cli(["schedule", "cron"], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    hourly, weekly = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    start = rf"mkdir -p {tmp_path}/data && cd {tmp_path} && RETAIL_TRIGGER=cron /\S+/retailctl"
    assert re.fullmatch(rf"5 \* \* \* \* {start} run-all >> {tmp_path}/data/retailctl.log 2>&1", hourly), (
        hourly
    )
    assert re.fullmatch(
        rf"30 3 \* \* 0 {start} bronze prune --older-than 30d "
        rf">> {tmp_path}/data/retailctl.log 2>&1",
        weekly,
    ), weekly


def test_schedule_cron_names_an_env_file_other_than_the_working_directorys(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "retail.env").write_text(f"RETAIL_DATA_DIR={tmp_path}/var\n")
    result = run_cli(
        ["--env-file", str(tmp_path / "etc" / "retail.env"), "schedule", "cron"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    hourly = cron_lines(result.stdout)[0]
    assert re.fullmatch(
        rf"mkdir -p {tmp_path}/var && cd {tmp_path} && RETAIL_TRIGGER=cron "
        rf"/\S+/retailctl --env-file {tmp_path}/etc/retail.env run-all "
        rf">> {tmp_path}/var/retailctl.log 2>&1",
        hourly,
    ), hourly


def test_the_printed_cron_lines_run_in_crons_bare_environment_on_a_fresh_install(
    start_mock, db_url: str, tmp_path: Path
) -> None:
    """The issue's failure: the log's directory did not exist, so /bin/sh never started retailctl."""
    install = tmp_path / "install"
    install.mkdir()
    api = start_mock(sales=300)
    (install / ".env").write_text(
        f"RETAIL_DATABASE_URL={db_url}\nRETAIL_API_URL={api.url}\nRETAIL_API_KEY={API_KEY}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    printed = run_cli(["schedule", "cron"], env={"PATH": "/usr/bin:/bin"}, cwd=install)
    assert not (install / "data").exists()
    log = install / "data" / "retailctl.log"
    # cron's environment; PYTHONPATH only where the tests run a checkout over an installed copy
    cron_env = [
        f"HOME={home}",
        "LOGNAME=root",
        "SHELL=/bin/sh",
        "PATH=/usr/bin:/bin",
        *([f"PYTHONPATH={os.environ['PYTHONPATH']}"] if "PYTHONPATH" in os.environ else []),
    ]
    outcomes = []
    for line in cron_lines(printed.stdout):
        ran = subprocess.run(
            ["env", "-i", *cron_env, "/bin/sh", "-c", line],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outcomes.append((ran.returncode, ran.stdout, ran.stderr))
    assert outcomes == [(0, "", ""), (0, "", "")]
    written = log.read_text().splitlines()
    assert re.fullmatch(
        r"run \S+ \(cron\) succeeded in \d+\.\ds: 4 steps; rows: bronze \+[\d,]+, "
        r"silver \+[\d,]+, gold \+[\d,]+; tests: \d+ passed, 0 failed",
        written[-2],
    ), written
    assert written[-1] == "deleted 0 file(s), 0.0 MB"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select trigger, status from meta.pipeline_runs").fetchall() == [
            ("cron", "success")
        ]
        assert conn.execute("select count(*) from silver.sales_customer").fetchone() == (300,)


def test_the_logrotate_file_rotates_the_cron_log(tmp_path: Path) -> None:
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate is not installed")
    data = tmp_path / "data"
    data.mkdir()
    (data / "retailctl.log").write_text("run 1 (cron) succeeded in 1.0s\n")
    result = run_cli(
        ["--data-dir", str(data), "schedule", "logrotate"], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"{data}/retailctl.log {{" in result.stdout.splitlines()
    (tmp_path / "retailctl.logrotate").write_text(result.stdout)
    rotate = subprocess.run(
        ["logrotate", "--force", "--state", str(tmp_path / "state"), str(tmp_path / "retailctl.logrotate")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rotate.returncode == 0, rotate.stderr
    assert sorted(path.name for path in data.iterdir()) == ["retailctl.log.1"]
    assert (data / "retailctl.log.1").read_text() == "run 1 (cron) succeeded in 1.0s\n"


def test_schedule_systemd_writes_units_next_steps_and_warnings(tmp_path: Path) -> None:
    """Under /tmp, for a user that does not exist: both said, with what to run next."""
    result = run_cli(
        ["schedule", "systemd", "--user", "etl-nobody", "--output-dir", str(tmp_path / "u")],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    service = (tmp_path / "u" / "retailctl.service").read_text()
    assert "User=etl-nobody\n" in service and f"ReadWritePaths={tmp_path}/data\n" in service
    assert "Documentation=" not in service and "Group=" not in service
    assert "OnCalendar=hourly" in (tmp_path / "u" / "retailctl.timer").read_text()
    prune = (tmp_path / "u" / "retailctl-prune.service").read_text()
    assert re.search(r"^ExecStart=/\S+/retailctl bronze prune --older-than 30d$", prune, re.MULTILINE)
    assert "OnCalendar=Sun *-*-* 03:30:00" in (tmp_path / "u" / "retailctl-prune.timer").read_text()
    units = " ".join(str(tmp_path / "u" / name) for name in schedule.UNIT_FILES)
    where = "install retailctl and its data elsewhere (for example /srv/retailctl)"
    assert result.stderr.splitlines() == [
        "warning: user 'etl-nobody' does not exist: create it (next steps) before the timer "
        "starts the service",
        f"warning: the working directory {tmp_path} is under /tmp, which PrivateTmp=yes replaces "
        f"with an empty directory for the service: {where}",
        f"warning: the data dir {tmp_path}/data is under /tmp, which PrivateTmp=yes replaces "
        f"with an empty directory for the service: {where}",
        "next steps, as root:",
        f"  useradd --system --home-dir {tmp_path}/data --shell /usr/sbin/nologin etl-nobody",
        f"  mkdir -p {tmp_path}/data && chown -R etl-nobody: {tmp_path}/data",
        f"  cp {units} /etc/systemd/system/",
        "  systemctl daemon-reload",
        "  systemctl enable --now retailctl.timer retailctl-prune.timer",
        "  systemctl list-timers 'retailctl*'   # then: journalctl -u retailctl.service",
    ]


def test_schedule_systemd_is_quiet_where_the_units_work(tmp_path: Path) -> None:
    """An existing user, an install outside /tmp: no warning, no useradd."""
    install = Path("/srv") / f"retailctl-test-{tmp_path.name}"
    install.mkdir(parents=True)
    try:
        result = run_cli(
            ["schedule", "systemd", "--user", "root"],
            env={"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": "postgresql://h/db"},
            cwd=install,
        )
    finally:
        install.rmdir()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "next steps, as root:",
        f"  mkdir -p {install}/data && chown -R root: {install}/data",
        "  save the units above as /etc/systemd/system/<name>",
        "  systemctl daemon-reload",
        "  systemctl enable --now retailctl.timer retailctl-prune.timer",
        "  systemctl list-timers 'retailctl*'   # then: journalctl -u retailctl.service",
    ]


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    listing = run_cli(["--help"], env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"}).stdout
    commands = re.findall(r"^│ ([a-z][a-z-]+)\s{2,}(\S.*?)\s*│$", listing, re.MULTILINE)
    names = {name for name, _ in commands}
    assert {
        "extract",
        "load",
        "transform",
        "test",
        "run-all",
        "status",
        "api",
        "config",
        "db",
        "state",
        "docs",
        "bronze",
        "schedule",
        "deps",
    } <= names
    for name, help_text in commands:
        assert help_text, f"{name} has no help"
        assert f"retailctl {name}" in readme, f"`retailctl {name}` is missing from the README"
