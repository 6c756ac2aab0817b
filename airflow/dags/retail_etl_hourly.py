"""retail_etl_hourly: the original project's DAG, rebuilt on retailctl (Airflow 3).

Each task is one retailctl step, run as a command, so the DAG runs unchanged on the Local,
Celery or Kubernetes executors: a worker needs retailctl installed and the RETAIL_* settings
in its environment (or a .env file in its working directory). The steps share their state in
Postgres (meta schema) and take the pipeline lock, so an overlapping run fails fast with 75
and is retried. Set RETAILCTL_BIN to the retailctl of the install to use.
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

RETAILCTL = shlex.quote(os.environ.get("RETAILCTL_BIN", "retailctl"))

default_args = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


def step(task_id: str, arguments: str) -> BashOperator:
    return BashOperator(task_id=task_id, bash_command=f"{RETAILCTL} --trigger airflow {arguments}",
                        append_env=True)


with DAG(
    dag_id="retail_etl_hourly",
    description="Retail API -> Bronze NDJSON -> Silver Postgres -> Gold dbt, with retailctl",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["retail", "retailctl"],
) as dag:
    bronze = step("bronze", "extract")
    silver = step("silver", "load")
    dbt_deps = step("dbt_deps", "deps")
    dbt_run_core = step("dbt_run_core", "transform --select core")
    dbt_run_mart = step("dbt_run_mart", "transform --select mart")
    dbt_test = step("dbt_test", "test --changed")

    bronze >> silver >> dbt_deps >> dbt_run_core >> dbt_run_mart >> dbt_test
