-- What Gold was last built and tested from: the newest silver _loaded_at at that time.
-- An hourly run with nothing new since skips dbt (an idle hour costs almost nothing).
create table if not exists meta.gold_state (
    step             text primary key check (step in ('transform', 'test')),
    silver_loaded_at timestamptz,
    finished_at      timestamptz not null default now()
);
