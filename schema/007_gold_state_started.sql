-- When the last passing test run started: `test --changed` (and run-all) check the Gold rows
-- written since then, so an hourly test costs in proportion to the new data.
alter table meta.gold_state add column if not exists started_at timestamptz;
