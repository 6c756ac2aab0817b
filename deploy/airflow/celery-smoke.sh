#!/usr/bin/env bash
# retail_etl_hourly on a real distributed Airflow 3: the CeleryExecutor with TWO workers, each
# playing a machine of its own (its own Celery queue, hostname, RETAIL_HOST and RETAIL_DATA_DIR),
# `bronze` pinned to worker A and `silver` to worker B, the metadata database a fresh one on the
# local PostgreSQL, the broker the local Redis (or RabbitMQ), the source the bundled mock API.
#
#   phase "disk": Bronze on each worker's own disk (today's default layout). Expected to FAIL:
#     bronze writes its files on A, silver on B finds nothing, gold stays empty. The script
#     checks that this is what happens and reports it as the expected failure.
#   phase "s3":   Bronze in an S3 bucket (a moto server on loopback, started here). Must PASS:
#     gold holds every sale of the source (count, lines, amount to the cent) and
#     meta.pipeline_runs names the host each task ran on (extract on A, load on B).
#
# usage: deploy/airflow/celery-smoke.sh [disk|s3|both]     (default: both)
# environment (all optional):
#   RETAILCTL_BIN   the retailctl to run (default: `command -v retailctl`)
#   AIRFLOW_VENV    a venv with apache-airflow[celery]>=3,<4, redis, psycopg and moto[server];
#                   default: a fresh one in the scratch directory, installed from PyPI
#   SMOKE_PG        server URL without database (default postgresql://postgres@127.0.0.1:5432)
#   SMOKE_BROKER    Celery broker (default redis://127.0.0.1:6379/13, a database the smoke
#                   empties of its keys on exit, when Redis answers; else
#                   amqp://guest:guest@127.0.0.1:5672//)
#   SMOKE_SALES     sales the mock serves (default 3000); SMOKE_TIMEOUT seconds a DAG run may
#                   take (default 600)
# Every process it starts and every database it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
phases="${1:-both}"
case "$phases" in disk | s3) ;; both) phases="disk s3" ;; *) echo "usage: $0 [disk|s3|both]" >&2; exit 2 ;; esac

began=$SECONDS
token="smoke$$"
scratch="$(mktemp -d)"
pg="${SMOKE_PG:-postgresql://postgres@127.0.0.1:5432}"
airflow_db="airflow_$token"
retail_db="retailctl_$token"
sales="${SMOKE_SALES:-3000}"
timeout="${SMOKE_TIMEOUT:-600}"
retailctl="${RETAILCTL_BIN:-$(command -v retailctl || true)}"
[ -x "$retailctl" ] || { echo "error: no retailctl (set RETAILCTL_BIN)" >&2; exit 78; }
groups=()  # process groups started here (each component runs in a session of its own)

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
elapsed() { echo "$((SECONDS - began))s"; }
sql() { # sql DATABASE QUERY: the rows, tab-separated
    "$py" - "$pg/$1" "$2" <<'PY'
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    cursor = conn.execute(sys.argv[2])
    for row in cursor.fetchall() if cursor.description else []:
        print("\t".join("" if v is None else str(v) for v in row))
PY
}
start() { # start NAME COMMAND...: in its own session, output to $scratch/NAME.log
    local name="$1"; shift
    setsid "$@" >"$scratch/$name.log" 2>&1 < /dev/null &
    groups+=("$!")
}
stop_all() {
    local pgid
    for pgid in "${groups[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pgid in "${groups[@]}"; do kill -0 -- "-$pgid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pgid in "${groups[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
    groups=()
}
cleanup() {
    local code=$?
    stop_all
    if [ -n "${py:-}" ]; then
        for db in "$airflow_db" "$retail_db"; do
            sql postgres "drop database if exists \"$db\" with (force)" || true
        done
        case "${broker:-}" in redis://*) "$py" - "$broker" "$token" <<'PY' || true ;;
import sys, redis
client = redis.Redis.from_url(sys.argv[1])
for key in client.scan_iter(f"*{sys.argv[2]}*"):  # our queues and their bindings
    client.delete(key)
client.delete("unacked", "unacked_index", "_kombu.binding_deadlines")  # kombu's, in our db 13
PY
        esac
    fi
    rm -rf "$scratch"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
fail() {
    echo "FAIL: $*" >&2
    for log in "$scratch"/*.log; do echo "--- last lines of $(basename "$log")" >&2; tail -n 15 "$log" >&2; done
    exit 1
}

echo "--- Airflow with the Celery provider"
venv="${AIRFLOW_VENV:-$scratch/venv}"
if [ ! -x "$venv/bin/airflow" ]; then
    python3 -m venv "$venv"
    # celery<5.7: the Celery provider (3.26) imports celery.backends.database.retry, gone in 5.7
    "$venv/bin/python" -m pip install --quiet 'apache-airflow[celery]>=3,<4' 'celery<5.7' redis \
        'psycopg[binary]' 'moto[server]>=5,<6'
fi
py="$venv/bin/python"
"$venv/bin/airflow" version

if [ -z "${SMOKE_BROKER:-}" ] && "$py" -c 'import redis; redis.Redis(port=6379).ping()' 2>/dev/null; then
    broker="redis://127.0.0.1:6379/13"
else
    broker="${SMOKE_BROKER:-amqp://guest:guest@127.0.0.1:5672//}"
fi
sql postgres "create database \"$airflow_db\""
api_port="$(free_port)"
source_port="$(free_port)"
s3_port="$(free_port)"

export AIRFLOW_HOME="$scratch/airflow-home"
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${pg/postgresql:/postgresql+psycopg:}/$airflow_db"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC="${pg/postgresql:/postgresql+psycopg_async:}/$airflow_db"
export AIRFLOW__CELERY__BROKER_URL="$broker"
export AIRFLOW__CELERY__RESULT_BACKEND="db+${pg/postgresql:/postgresql+psycopg:}/$airflow_db"
export AIRFLOW__CORE__DAGS_FOLDER="$repo/airflow/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$api_port/execution/"
export AIRFLOW__API_AUTH__JWT_SECRET="$token-$RANDOM$RANDOM$RANDOM"
export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False  # only the runs triggered here: no @hourly run
export AIRFLOW__OPERATORS__DEFAULT_QUEUE="${token}_default"
export RETAILCTL_QUEUES="bronze=${token}_a,silver=${token}_b"  # read where the DAG is parsed
export RETAILCTL_BIN="$retailctl"
unset RETAIL_DATABASE_URL RETAIL_API_URL RETAIL_API_KEY RETAIL_DATA_DIR RETAIL_BRONZE_URL RETAIL_ENV_FILE

echo "--- metadata database $airflow_db, broker $broker ($(elapsed))"
"$venv/bin/airflow" db migrate >"$scratch/db-migrate.log" 2>&1 || fail "airflow db migrate"

echo "--- the mock API (:$source_port, $sales sales), the S3 server (:$s3_port), Airflow: api-server, scheduler, dag-processor, two Celery workers"
start source "$retailctl" api serve --port "$source_port" --sales "$sales" --api-key SMOKE_KEY_0123
start s3 "$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$s3_port"
start api-server "$venv/bin/airflow" api-server --host 127.0.0.1 --port "$api_port" --workers 1 --apps execution
start scheduler "$venv/bin/airflow" scheduler
start dag-processor "$venv/bin/airflow" dag-processor
for machine in a b; do
    mkdir -m 700 -p "$scratch/machine-$machine/data"
    # each worker a machine of its own: its own disk (RETAIL_DATA_DIR) and name (RETAIL_HOST)
    start "worker-$machine" env RETAIL_DATA_DIR="$scratch/machine-$machine/data" RETAIL_HOST="smoke-$machine" \
        "$venv/bin/airflow" celery worker --celery-hostname "smoke-$machine@%h" --concurrency 1 \
        --skip-serve-logs --queues "${token}_$machine$([ "$machine" = a ] && echo ",${token}_default")"
done

# the settings every task gets, defined once in Airflow (the DAG's docstring lists them)
"$venv/bin/airflow" connections add retailctl_database --conn-type postgres --conn-host 127.0.0.1 \
    --conn-port "$(echo "$pg" | sed -E 's/.*:([0-9]+)$/\1/')" --conn-login postgres --conn-schema "$retail_db" \
    >/dev/null
"$venv/bin/airflow" connections add retailctl_api --conn-type http --conn-host 127.0.0.1 \
    --conn-port "$source_port" --conn-password SMOKE_KEY_0123 >/dev/null
"$venv/bin/airflow" connections add retailctl_object_store --conn-type aws --conn-login smoke-access-key \
    --conn-password smoke-secret-key \
    --conn-extra "{\"endpoint_url\": \"http://127.0.0.1:$s3_port\", \"region_name\": \"us-east-1\"}" >/dev/null

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local limit=$((SECONDS + $1)) what="$2"; shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$limit" ] || fail "$what: not within the time allowed"
        sleep 1
    done
}
dag_parsed() {
    [ -z "$(sql "$airflow_db" "select stacktrace from import_error limit 1" 2>/dev/null)" ] \
        || fail "the DAG does not import: $(sql "$airflow_db" "select stacktrace from import_error")"
    [ -n "$(sql "$airflow_db" "select 1 from serialized_dag where dag_id = 'retail_etl_hourly'")" ]
}
source_up() { "$py" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$source_port/docs', timeout=2)" 2>/dev/null; }
s3_up() { "$py" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$s3_port/moto-api/', timeout=2)" 2>/dev/null; }
wait_for 120 "the DAG parsed by the dag-processor" dag_parsed
wait_for 60 "the mock API" source_up
echo "DAG parsed, mock API up ($(elapsed))"

# What the source holds, read over its API: sales, lines and their amount.
read -r source_sales source_lines source_amount < <("$py" - "http://127.0.0.1:$source_port" <<'PY'
import json, sys, urllib.request
from decimal import Decimal
sales = lines = 0
amount = Decimal(0)
next_id = 1
while True:
    request = urllib.request.Request(f"{sys.argv[1]}/sales?start_sales_id={next_id}&limit=1000",
                                     headers={"Authorization": "SMOKE_KEY_0123"})
    items = json.loads(urllib.request.urlopen(request).read(), parse_float=Decimal)["items"]
    for sale in items:
        sales += 1
        lines += len(sale["items"])
        amount += sum(Decimal(item["amount"]) for item in sale["items"])
    if len(items) < 1000:
        break
    next_id = items[-1]["id"] + 1
print(sales, lines, amount)
PY
)
echo "source: $source_sales sales, $source_lines lines, amount $source_amount"

run_dag() { # run_dag PHASE: trigger, wait for the end, print the tasks (state, queue, worker)
    local run_id="${token}_$1" state="" limit=$((SECONDS + timeout))
    sql postgres "drop database if exists \"$retail_db\" with (force)"
    sql postgres "create database \"$retail_db\""
    "$venv/bin/airflow" dags trigger retail_etl_hourly --run-id "$run_id" >/dev/null
    while :; do
        state="$(sql "$airflow_db" "select state from dag_run where run_id = '$run_id'")"
        case "$state" in success | failed) break ;; esac
        [ "$SECONDS" -lt "$limit" ] || fail "DAG run $run_id still '$state' after ${timeout}s"
        sleep 2
    done
    echo "DAG run $run_id: $state ($(elapsed))"
    sql "$airflow_db" "select task_id, state, queue, round(extract(epoch from end_date - start_date)::numeric, 1)
                       from task_instance where run_id = '$run_id' order by start_date nulls last" |
        sed 's/^/  task\t/'
    # why a task failed, from its log: the DAG's own line (exit code and retailctl's last line)
    grep -rhoE "retailctl exited [0-9]+[^\"]{0,300}" "$AIRFLOW_HOME/logs/dag_id=retail_etl_hourly/run_id=$run_id" \
        2>/dev/null | sort -u | sed 's/^/  failed: /' || true
    run_state="$state"
}
host_of() { # host_of STEP: the host meta.pipeline_runs recorded for the airflow run of that step
    sql "$retail_db" "select host from meta.pipeline_runs where trigger = 'airflow'
                      and steps -> 0 ->> 'step' = '$1' order by started_at desc limit 1"
}
gold_figures() {
    sql "$retail_db" "select count(distinct sale_id), count(*), coalesce(sum(item_amount), 0)
                      from gold.sales_item" 2>/dev/null || echo "0 0 0"
}

for phase in $phases; do
    phase_began=$SECONDS
    if [ "$phase" = disk ]; then
        echo "=== phase disk: Bronze on each worker's own disk (expected to fail)"
        "$venv/bin/airflow" variables set retailctl_settings '{}' >/dev/null
    else
        echo "=== phase s3: Bronze in s3://retail-smoke/bronze on the S3 server"
        env RETAIL_BRONZE_URL=s3://retail-smoke/bronze "$retailctl" config \
            >/dev/null 2>&1 || fail "this retailctl does not know RETAIL_BRONZE_URL (Bronze on object storage)"
        wait_for 60 "the S3 server" s3_up
        "$py" - "http://127.0.0.1:$s3_port" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="smoke-access-key",
             aws_secret_access_key="smoke-secret-key").create_bucket(Bucket="retail-smoke")
PY
        "$venv/bin/airflow" variables set retailctl_settings \
            '{"RETAIL_BRONZE_URL": "s3://retail-smoke/bronze", "RETAIL_PAGE_SIZE": "1000"}' >/dev/null
    fi
    run_dag "$phase"
    read -r gold_sales gold_lines gold_amount < <(gold_figures | tr '\t' ' ')
    extract_host="$(host_of extract)" load_host="$(host_of load)"
    echo "gold: $gold_sales sales, $gold_lines lines, amount $gold_amount; extract ran on '$extract_host', load on '$load_host'"
    echo "meta.pipeline_runs:"
    sql "$retail_db" "select steps -> 0 ->> 'step', host, status from meta.pipeline_runs
                      where trigger = 'airflow' order by started_at" | sed 's/^/  run\t/'
    [ "$extract_host" = smoke-a ] && [ "$load_host" = smoke-b ] \
        || fail "extract and load did not run on the workers they were pinned to (smoke-a, smoke-b)"
    if [ "$phase" = disk ]; then
        on_a="$( (find "$scratch/machine-a/data/bronze" -name '*.ndjson' 2>/dev/null || true) | wc -l)"
        on_b="$( (find "$scratch/machine-b/data/bronze" -name '*.ndjson' 2>/dev/null || true) | wc -l)"
        loaded="$(sql "$retail_db" "select count(*) from meta.loaded_files")"
        echo "bronze files: $on_a on smoke-a's disk, $on_b on smoke-b's; files loaded into silver: $loaded"
        if [ "$on_a" -gt 0 ] && [ "$on_b" = 0 ] && [ "$loaded" = 0 ] && [ "$gold_sales" = 0 ]; then
            echo "EXPECTED FAILURE (local-disk Bronze): bronze wrote $on_a file(s) on smoke-a; silver on" \
                "smoke-b found none to load; gold holds 0 of the source's $source_sales sales" \
                "(DAG run: $run_state) [$((SECONDS - phase_began))s]"
        else
            fail "the local-disk layout did not fail as expected (files a=$on_a b=$on_b, loaded $loaded, gold $gold_sales)"
        fi
    else
        [ "$run_state" = success ] || fail "the DAG run with Bronze on S3 ended $run_state"
        [ "$gold_sales $gold_lines $gold_amount" = "$source_sales $source_lines $source_amount" ] \
            || fail "gold ($gold_sales sales, $gold_lines lines, $gold_amount) differs from the source"
        hosts="$(sql "$retail_db" "select count(*) from meta.pipeline_runs where trigger = 'airflow'
                                   and status = 'success' and host in ('smoke-a', 'smoke-b')")"
        [ "$hosts" = 5 ] || fail "$hosts of the 5 steps that keep a history (dbt_deps keeps none) succeeded on smoke-a or smoke-b"
        echo "PASS (Bronze on S3): gold holds all $source_sales sales, $source_lines lines, amount" \
            "$source_amount; extract on smoke-a, load on smoke-b [$((SECONDS - phase_began))s]"
    fi
done
echo "celery smoke done in $(elapsed)"
