"""Running unattended: bronze retention, the cron and systemd files, the docs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from retailctl import schedule
from tests.helpers import invoke, load, run_cli, write_bronze

ROOT = Path(__file__).resolve().parents[1]


def env_for(data_dir: Path, db_url: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "RETAIL_DATABASE_URL": db_url, "RETAIL_API_URL": "http://x",
            "RETAIL_DATA_DIR": str(data_dir)}


def test_prune_deletes_only_old_loaded_files(data_dir: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    old_loaded = write_bronze(data_dir, "sales_product", [{"sale_id": 1, "line_no": 1,
                              "product_sku": "S", "quantity": 1, "amount": 1.0}], now - timedelta(days=40))
    recent_loaded = write_bronze(data_dir, "sales_product", [{"sale_id": 2, "line_no": 1,
                                 "product_sku": "S", "quantity": 1, "amount": 1.0}], now - timedelta(days=2))
    load(data_dir, db_url)
    old_unloaded = write_bronze(data_dir, "sales_product", [{"sale_id": 3}], now - timedelta(days=50))
    rejected = write_bronze(data_dir, "_rejected/sales", [{"id": 4, "_reject_reason": "x"}],
                            now - timedelta(days=60))
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
    assert load(data_dir, db_url).errors == [  # the pruned file is not missed; the other fails
        f"{old_unloaded.relative_to(data_dir / 'bronze')}: line 1: missing field 'line_no'"]
    with psycopg.connect(db_url) as conn:  # the manifest keeps the history
        assert conn.execute("select count(*) from meta.loaded_files").fetchone() == (2,)


def test_prune_refuses_a_bad_age_as_a_usage_error(data_dir: Path, db_url: str) -> None:
    result = invoke(["bronze", "prune", "--older-than", "soon"], env={**env_for(data_dir, db_url),
                                                                     "COLUMNS": "200"})
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "Usage: retailctl bronze prune [OPTIONS]"
    assert "│ Invalid value for '--older-than': 'soon' is not an age: expected a number and h, d or w, " \
        "like 30d " in lines[3]


def test_checked_in_schedule_files_are_what_the_command_renders() -> None:
    values = {"workdir": Path("/srv/retailctl"), "data_dir": Path("/srv/retailctl/data"),
              "command": "/srv/retailctl/.venv/bin/retailctl"}
    assert (ROOT / "crontab.example").read_text() == schedule.render("crontab", **values)
    assert schedule.UNIT_FILES == ("retailctl.service", "retailctl.timer")
    for name in schedule.UNIT_FILES:
        assert (ROOT / "deploy" / "systemd" / name).read_text() == \
            schedule.render(name, user="retailctl", **values)


def test_schedule_cron_fills_in_this_install(tmp_path: Path) -> None:
    result = invoke(["schedule", "cron"])  # in tmp_path, the autouse fixture's directory
    assert result.exit_code == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    assert re.fullmatch(rf"5 \* \* \* \* cd {tmp_path} && RETAIL_TRIGGER=cron /\S+/retailctl "
                        rf"run-all >> {tmp_path}/data/retailctl.log 2>&1", line), line


def test_schedule_systemd_writes_units(tmp_path: Path) -> None:
    result = invoke(["schedule", "systemd", "--user", "etl", "--output-dir", str(tmp_path / "u")])
    assert result.exit_code == 0, result.stderr
    service = (tmp_path / "u" / "retailctl.service").read_text()
    assert "User=etl\n" in service and f"ReadWritePaths={tmp_path}/data\n" in service
    assert "OnCalendar=hourly" in (tmp_path / "u" / "retailctl.timer").read_text()


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    listing = invoke(["--help"], env={"COLUMNS": "200"}).stdout
    commands = re.findall(r"^│ ([a-z][a-z-]+)\s{2,}(\S.*?)\s*│$", listing, re.MULTILINE)
    names = {name for name, _ in commands}
    assert {"extract", "load", "transform", "test", "run-all", "status", "api", "config", "db",
            "state", "docs", "bronze", "schedule", "deps"} <= names
    for name, help_text in commands:
        assert help_text, f"{name} has no help"
        assert f"retailctl {name}" in readme, f"`retailctl {name}` is missing from the README"
