-- Extract's bookkeeping for issue 12 (changes, not only appends).

-- The content hash of each recently read sale (sha256 of its canonical JSON: keys sorted), so
-- that a sale re-read by the lookback and unchanged is not written to bronze again. Written in
-- the cursor's transaction, after the files are durable; ids below the lookback window are
-- pruned, so the table holds about RETAIL_SALES_LOOKBACK rows.
create table if not exists meta.sale_hashes (
    sale_id bigint primary key,
    sha256  bytea not null
);

-- One row per customers/products snapshot file extract wrote: `complete` when paging ended
-- normally (a short or empty page, or offset >= total_items) and nothing was rejected; not when
-- it stopped on a repeated page (an API ignoring offset) or a cap. Written in the transaction
-- of the snapshot's hash; `load` marks the keys absent from a complete snapshot deleted.
create table if not exists meta.snapshot_files (
    path     text primary key,  -- below the bronze dir, as in meta.loaded_files
    entity   text not null,
    complete boolean not null,
    records  bigint not null
);
