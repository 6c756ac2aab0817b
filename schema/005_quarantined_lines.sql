-- Lines of a loaded bronze file that `load` set aside under bronze/_rejected/load/ (they could
-- not be stored exactly): the file is loaded with rejects, and the next load does not take it
-- again.
alter table meta.loaded_files add column if not exists quarantined_lines bigint not null default 0;
