-- Extract bookkeeping: the last snapshot's content hash per entity (an identical snapshot
-- writes no file) and one row per entity per extract run (rejects, inconsistencies).
create table if not exists meta.snapshot_state (
    entity       text primary key,
    content_hash text not null,
    records      bigint not null,
    path         text,
    updated_at   timestamptz not null default now()
);

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
