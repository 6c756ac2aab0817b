-- Changes, not only appends (issue 12): the contract between `load` (silver) and Gold (dbt).
--
-- A sale read again replaces its previous version whole. `load` does, in the transaction that
-- loads the file:
--   * a changed header is updated in place, with a new _loaded_at (as any upsert);
--   * lines the new version no longer has are deleted from silver.sales_product;
--   * one row per (sale, old customer-day) the change moved or shrank is appended to
--     silver.sales_changes: the header's old customer_id and the old UTC day of its datetime
--     when either changes, or the sale's customer and day at that time when lines are removed.
-- A row there means "sale S changed; the pair (customer_id, day) may have lost it". Gold reads
-- it through _loaded_at: the fact rewrites sale S whole (its removed lines vanish), the mart
-- recomputes that customer-day (and drops it when no sale is left on it). Append-only: rows are
-- never updated or deleted by the pipeline, so a watermark on _loaded_at never misses one.
create table if not exists silver.sales_changes (
    sale_id      bigint not null,
    customer_id  text not null,
    day          date not null,
    _loaded_at   timestamptz not null default now()
);
-- New changes since a watermark (both Gold models); a sale's latest change (the fact).
create index if not exists sales_changes_loaded_at on silver.sales_changes (_loaded_at);
create index if not exists sales_changes_sale_id on silver.sales_changes (sale_id);

-- Delisted customers and products: one absent from a complete snapshot (every page read) gets
-- _deleted_at (and a new _loaded_at); one that comes back gets null again (and a new
-- _loaded_at). The row is never removed: facts still join to it; the dims carry is_deleted.
alter table silver.customers add column if not exists _deleted_at timestamptz;
alter table silver.products add column if not exists _deleted_at timestamptz;
