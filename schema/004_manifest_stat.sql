-- Size and mtime of each loaded file: an unchanged stat means an unchanged file, so `load`
-- re-hashes only files touched since they were loaded (hourly cost stays flat as bronze grows).
alter table meta.loaded_files add column if not exists size_bytes bigint;
alter table meta.loaded_files add column if not exists mtime_ns bigint;
create index if not exists loaded_files_loaded_at on meta.loaded_files (loaded_at);
