-- The `meta` schema: the pipeline's own bookkeeping, shared by every step.
-- Read this file to learn where retailctl keeps its state; the data itself is in 002_silver.sql.
create schema if not exists meta;

-- One row per applied migration file of schema/ (`retailctl db migrate`, or any command).
-- `checksum` is the sha256 of the file as applied: an applied file that changes later is an
-- error, never silently skipped. retailctl/store/migrations.py creates this table before it
-- applies this file (SCHEMA_MIGRATIONS_DDL there): keep both definitions the same.
create table if not exists meta.schema_migrations (
    version    text primary key,
    applied_at timestamptz not null default now(),
    checksum   text
);

-- The sales cursor (`retailctl state show`): last_sales_id is the next sale id to read, as in
-- the original project. Moved only in the transaction that makes the files it covers durable.
create table if not exists meta.ingestion_state (
    source_name   text primary key,
    last_sales_id bigint,
    last_run_ts   timestamptz,
    note          text
);

-- The load manifest: one row per bronze file loaded into silver, keyed by its path.
-- size_bytes and mtime_ns: an unchanged stat means an unchanged file, so `load` re-hashes only
-- files touched since they were loaded (the hourly cost stays flat as bronze grows).
create table if not exists meta.loaded_files (
    path       text primary key,
    entity     text not null,
    sha256     text not null,
    rows       bigint not null,
    batch_id   uuid,
    loaded_at  timestamptz not null default now(),
    size_bytes bigint,
    mtime_ns   bigint
);
create index if not exists loaded_files_loaded_at on meta.loaded_files (loaded_at);

-- Run history: one row per command run (`retailctl status` shows the latest), steps as JSON.
create table if not exists meta.pipeline_runs (
    run_id      uuid primary key,
    trigger     text not null,
    started_at  timestamptz not null,
    finished_at timestamptz,
    status      text not null check (status in ('running', 'success', 'failed', 'interrupted')),
    steps       jsonb not null default '[]'::jsonb,
    error       text
);
create index if not exists pipeline_runs_started_at on meta.pipeline_runs (started_at desc);

-- The last snapshot's content hash per snapshot entity (customers, products): an identical
-- snapshot writes no bronze file.
create table if not exists meta.snapshot_state (
    entity       text primary key,
    content_hash text not null,
    records      bigint not null,
    path         text,
    updated_at   timestamptz not null default now()
);

-- One row per entity per extract run: records written, rejected and inconsistent.
create table if not exists meta.extract_log (
    id           bigserial primary key,
    extracted_at timestamptz not null default now(),
    entity       text not null,
    records      bigint not null,
    rejected     bigint not null,
    inconsistent bigint not null,
    files        int not null,
    note         text
);
create index if not exists extract_log_extracted_at on meta.extract_log (extracted_at desc);

-- What Gold was last built (`transform`) and tested (`test`) from: the newest silver _loaded_at
-- at that time, so an hourly run with nothing new since skips dbt. started_at: when the last
-- passing test run started; `test --changed` (and run-all) check only Gold rows written since.
create table if not exists meta.gold_state (
    step             text primary key check (step in ('transform', 'test')),
    silver_loaded_at timestamptz,
    finished_at      timestamptz not null default now(),
    started_at       timestamptz
);
