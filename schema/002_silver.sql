-- The `silver` schema: one row per business key, upserted from bronze by `retailctl load`.
-- Every row also carries, from its bronze file, _ingestion_ts (when extract read it) and
-- _batch_id (the extract batch), and _loaded_at: the load transaction that inserted or last
-- changed it, which is Gold's incremental watermark. Money is numeric, time timestamptz.
create schema if not exists silver;
-- Gold's tables are built by dbt (dbt/); its schema is created here with the others.
create schema if not exists gold;

-- Customers, from the complete /customers snapshot.
create table if not exists silver.customers (
    customer_id    text primary key,
    emails         text[] not null,
    phone_numbers  text[] not null,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null
);

-- Products, from the complete /products snapshot.
create table if not exists silver.products (
    product_sku    text primary key,
    description    text,
    unit_amount    numeric not null,
    supplier       text,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null
);

-- One row per sale (the sale's header). A COPY of new sale ids straight into the table leaves
-- _loaded_at to its default: now() is the load transaction's start, the value upserts write.
create table if not exists silver.sales_customer (
    id             bigint primary key,
    datetime       timestamptz not null,
    total_amount   numeric not null,
    customer_id    text not null,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null default now()
);

-- One row per sale line; line_no is the 1-based position in the sale's items.
create table if not exists silver.sales_product (
    sale_id        bigint not null,
    line_no        int not null,
    product_sku    text not null,
    quantity       int not null,
    amount         numeric not null,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null default now(),
    primary key (sale_id, line_no)
);

-- The indexes Gold's incremental models rely on: new work selected by _loaded_at in every
-- table; a product's or a customer's sale lines; the distinct SKUs and customers sold (a loose
-- index scan instead of a full scan).
create index if not exists sales_customer_loaded_at on silver.sales_customer (_loaded_at);
create index if not exists sales_product_loaded_at on silver.sales_product (_loaded_at);
create index if not exists products_loaded_at on silver.products (_loaded_at);
create index if not exists customers_loaded_at on silver.customers (_loaded_at);
create index if not exists sales_product_product_sku on silver.sales_product (product_sku);
create index if not exists sales_customer_customer_id on silver.sales_customer (customer_id);
