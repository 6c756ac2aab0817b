-- A COPY straight into silver (new sale ids) leaves _loaded_at to this default: now() is the
-- load transaction's start, the same value the update/insert path writes.
alter table silver.sales_customer alter column _loaded_at set default now();
alter table silver.sales_product alter column _loaded_at set default now();
