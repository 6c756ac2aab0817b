"""retail_etl_hourly: the original project's DAG, rebuilt on retailctl (Airflow 3).

Each task is one retailctl step, run as a command, so the DAG runs unchanged on the Local,
Celery or Kubernetes executors: a worker needs retailctl installed and the RETAIL_* settings
in its environment (or RETAIL_ENV_FILE naming a file that holds them). The steps share their
state in Postgres (meta schema) and take the pipeline lock, so an overlapping run fails fast
with 75 and is retried. Set RETAILCTL_BIN to the retailctl of the install to use.

A step fails at once, without retries, on the exit codes that a retry cannot fix: 2 (usage),
3 (dbt data tests failed), 77 (credentials rejected), 78 (bad setting). Every other failure
(69 unreachable, 75 lock held, 1, 143) is retried with backoff.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import DAG, BaseOperator

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # earlier Airflow 3 releases have them in airflow.exceptions only
    from airflow.exceptions import AirflowException, AirflowFailException

RETAILCTL = os.environ.get("RETAILCTL_BIN", "retailctl")
NOT_RETRIED = {
    2: "usage error",
    3: "dbt data tests failed",
    77: "credentials rejected",
    78: "a setting is invalid or missing",
}

default_args = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


class RetailctlStep(BaseOperator):
    """`retailctl --trigger airflow <arguments>`; its output goes to the task log."""

    template_fields = ("arguments",)

    def __init__(self, *, arguments: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arguments = arguments

    @cached_property
    def hook(self) -> SubprocessHook:
        return SubprocessHook()

    def execute(self, context: Any) -> None:
        result = self.hook.run_command(
            [RETAILCTL, "--trigger", "airflow", *self.arguments], env=dict(os.environ)
        )
        code = result.exit_code
        if code in NOT_RETRIED:
            raise AirflowFailException(
                f"retailctl exited {code} ({NOT_RETRIED[code]}): a retry "
                f"cannot fix this; last line: {result.output}"
            )
        if code != 0:
            raise AirflowException(f"retailctl exited {code}: last line: {result.output}")

    def on_kill(self) -> None:
        self.hook.send_sigterm()  # retailctl rolls back and exits 143


def step(task_id: str, *arguments: str) -> RetailctlStep:
    return RetailctlStep(task_id=task_id, arguments=list(arguments))


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
    dbt_run_core = step("dbt_run_core", "transform", "--select", "core")
    dbt_run_mart = step("dbt_run_mart", "transform", "--select", "mart")
    dbt_test = step("dbt_test", "test", "--changed")

    bronze >> silver >> dbt_deps >> dbt_run_core >> dbt_run_mart >> dbt_test
