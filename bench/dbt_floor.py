"""The dbt floor: what one in-process dbt invocation costs on this machine, start-up included.

    python bench/dbt_floor.py PROJECT_DIR [--freeze-at-exit] [DBT FLAGS ...]
        (run by bench_pipeline.py, timed from outside)

A fresh process imports dbt and makes one dbtRunner invocation building one trivial model,
with the flags `retailctl` passes and its partial-parse cache warm (run it once untimed first).
`write_project` lays out that one-model project and its profile; the connection comes from the
environment, as retailctl's does (`gold.dbt_environment`). With --freeze-at-exit it ends as
`retailctl` does (`gc.freeze()` before the interpreter's shutdown, see retailctl/cli/app.py), so
the floor can be had both as the issue defines it and with the same exit.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

PROJECT = """\
name: floor
version: "1.0.0"
config-version: 2
profile: floor
model-paths: ["models"]
"""
PROFILE = """\
floor:
  target: default
  outputs:
    default:
      type: postgres
      host: "{{ env_var('RETAIL_DBT_HOST') }}"
      port: "{{ env_var('RETAIL_DBT_PORT') | as_number }}"
      user: "{{ env_var('RETAIL_DBT_USER') }}"
      password: "{{ env_var('DBT_ENV_SECRET_RETAIL_DB_PASSWORD', '') }}"
      dbname: "{{ env_var('RETAIL_DBT_DBNAME') }}"
      schema: bench_floor
      threads: 2
"""
MODEL = "{{ config(materialized='table') }}\nselect 1 as one\n"


def write_project(root: Path) -> None:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(PROJECT)
    (root / "profiles.yml").write_text(PROFILE)
    (root / "models" / "trivial.sql").write_text(MODEL)


def main() -> None:
    from dbt.cli.main import dbtRunner

    root = Path(sys.argv[1])
    freeze_at_exit = "--freeze-at-exit" in sys.argv[2:]
    flags = ["--project-dir", str(root), "--profiles-dir", str(root)]
    flags += ["--target-path", str(root / "target"), "--log-path", str(root / "logs")]
    # then the flags retailctl passes to every invocation (bench_pipeline.py reads them from
    # retailctl.gold: importing it here would add retailctl's own imports to the floor)
    flags += [arg for arg in sys.argv[2:] if arg != "--freeze-at-exit"]
    result = dbtRunner().invoke(["run", "--select", "trivial", *flags])
    if freeze_at_exit:
        gc.freeze()
    sys.exit(0 if result.success else 1)


if __name__ == "__main__":
    main()
