"""retail_etl_hourly: the original project's DAG, rebuilt on retailctl (Airflow 3).

Each task is one retailctl step, run as a command on whichever worker the executor picks
(Local, Celery or Kubernetes): a worker needs retailctl installed (RETAILCTL_BIN names it) and
nothing on its own disk that another task needs. The steps share their state in Postgres (the
meta schema) and take the pipeline lock, so an overlapping run fails fast with 75 and is
retried; Bronze must be where every worker reads it (RETAIL_BRONZE_URL=s3://...) as soon as
the tasks can land on different machines.

Settings, the same for every task, from one set defined in Airflow (each optional; what is not
defined comes from the worker's environment or its RETAIL_ENV_FILE):
- connection `retailctl_database` (postgres): RETAIL_DATABASE_URL
- connection `retailctl_api` (http; the key as its password): RETAIL_API_URL, RETAIL_API_KEY
- connection `retailctl_object_store` (aws: access key id and secret, extra `endpoint_url`,
  `region_name`): the standard AWS variables the Bronze store is reached with
- variable `retailctl_settings`: a JSON object of other RETAIL_* settings
  (e.g. {"RETAIL_BRONZE_URL": "s3://bucket/bronze", "RETAIL_PAGE_SIZE": "1000"})

RETAILCTL_QUEUES (read where the DAG is parsed) pins tasks to Celery queues:
`bronze=extract_hosts,silver=load_hosts`; a task not named goes to the default queue.

A step fails at once, without retries, on the exit codes that a retry cannot fix: 2 (usage),
3 (dbt data tests failed), 77 (credentials rejected), 78 (bad setting). Every other failure
(69 unreachable, 75 lock held, 1, 143) is retried with backoff.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlencode

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import DAG, BaseOperator, Connection, Variable

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
except ImportError:  # earlier Airflow 3 releases have them in airflow.exceptions only
    from airflow.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

RETAILCTL = os.environ.get("RETAILCTL_BIN", "retailctl")
DATABASE_CONNECTION = "retailctl_database"
API_CONNECTION = "retailctl_api"
OBJECT_STORE_CONNECTION = "retailctl_object_store"
SETTINGS_VARIABLE = "retailctl_settings"
LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name")
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


def task_queues(spec: str) -> dict[str, str]:
    """`bronze=q1,silver=q2` as {"bronze": "q1", "silver": "q2"}; a malformed pair stops the
    DAG from loading (an import error in Airflow) rather than running on the wrong worker."""
    queues = {}
    for pair in filter(None, (part.strip() for part in spec.split(","))):
        task, equals, queue = pair.partition("=")
        if not equals or not task.strip() or not queue.strip():
            raise ValueError(f"RETAILCTL_QUEUES: {pair!r} is not task=queue")
        queues[task.strip()] = queue.strip()
    return queues


def _connection(conn_id: str) -> Any | None:
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def database_url(conn: Any) -> str:
    """A libpq URL from a postgres connection (its schema field is the database)."""
    user = quote(conn.login or "", safe="")
    password = f":{quote(conn.password, safe='')}" if conn.password else ""
    port = f":{conn.port}" if conn.port else ""
    query = {key: conn.extra_dejson[key] for key in LIBPQ_EXTRAS if key in conn.extra_dejson}
    url = f"postgresql://{user}{password}{'@' if user else ''}{conn.host}{port}/{quote(conn.schema or '')}"
    return f"{url}?{urlencode(query)}" if query else url


def api_url(conn: Any) -> str:
    """The API's base URL from an http connection (host alone or a whole URL)."""
    if "://" in (conn.host or ""):
        return conn.host.rstrip("/")
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'http'}://{conn.host}{port}"


def airflow_settings() -> dict[str, str]:
    """The RETAIL_* (and AWS_*) variables from the Airflow connections and variable above."""
    env: dict[str, str] = {}
    raw = Variable.get(SETTINGS_VARIABLE, default=None)
    if raw:
        values = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(values, dict) or not all(str(k).startswith("RETAIL_") for k in values):
            problem = "expected a JSON object of RETAIL_* names"
            raise AirflowFailException(f"variable {SETTINGS_VARIABLE}: {problem}")
        env.update({str(k): str(v) for k, v in values.items()})
    if conn := _connection(DATABASE_CONNECTION):
        env["RETAIL_DATABASE_URL"] = database_url(conn)
    if conn := _connection(API_CONNECTION):
        env["RETAIL_API_URL"] = api_url(conn)
        if conn.password:
            env["RETAIL_API_KEY"] = conn.password
    if conn := _connection(OBJECT_STORE_CONNECTION):
        extra = conn.extra_dejson
        pairs = {
            "AWS_ACCESS_KEY_ID": conn.login,
            "AWS_SECRET_ACCESS_KEY": conn.password,
            "AWS_ENDPOINT_URL": extra.get("endpoint_url"),
            "AWS_REGION": extra.get("region_name"),
        }
        env.update({name: str(value) for name, value in pairs.items() if value})
    return env


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
            [RETAILCTL, "--trigger", "airflow", *self.arguments], env={**os.environ, **airflow_settings()}
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


QUEUES = task_queues(os.environ.get("RETAILCTL_QUEUES", ""))


def step(task_id: str, *arguments: str) -> RetailctlStep:
    queue = {"queue": QUEUES[task_id]} if task_id in QUEUES else {}
    return RetailctlStep(task_id=task_id, arguments=list(arguments), **queue)


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
    unknown = set(QUEUES) - set(dag.task_dict)
    if unknown:
        raise ValueError(f"RETAILCTL_QUEUES names no task of this DAG: {', '.join(sorted(unknown))}")

    bronze >> silver >> dbt_deps >> dbt_run_core >> dbt_run_mart >> dbt_test
