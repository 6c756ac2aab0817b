-- The shared state of the pipeline steps.
create schema if not exists meta;

create table if not exists meta.ingestion_state (
    source_name   text primary key,
    last_sales_id bigint,
    last_run_ts   timestamptz,
    note          text
);

create table if not exists meta.loaded_files (
    path      text primary key,
    entity    text not null,
    sha256    text not null,
    rows      bigint not null,
    batch_id  uuid,
    loaded_at timestamptz not null default now()
);

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
