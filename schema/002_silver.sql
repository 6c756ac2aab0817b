-- Silver: one row per business key, upserted from bronze by `retailctl load`.
create schema if not exists silver;
create schema if not exists gold;

create table if not exists silver.customers (
    customer_id    text primary key,
    emails         text[] not null,
    phone_numbers  text[] not null,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null
);

create table if not exists silver.products (
    product_sku    text primary key,
    description    text,
    unit_amount    numeric not null,
    supplier       text,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null
);

create table if not exists silver.sales_customer (
    id             bigint primary key,
    datetime       timestamptz not null,
    total_amount   numeric not null,
    customer_id    text not null,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null
);

create table if not exists silver.sales_product (
    sale_id        bigint not null,
    line_no        int not null,
    product_sku    text not null,
    quantity       int not null,
    amount         numeric not null,
    _ingestion_ts  timestamptz not null,
    _batch_id      uuid not null,
    _loaded_at     timestamptz not null,
    primary key (sale_id, line_no)
);

-- Gold's incremental models select new work by _loaded_at.
create index if not exists sales_customer_loaded_at on silver.sales_customer (_loaded_at);
create index if not exists sales_product_loaded_at on silver.sales_product (_loaded_at);
