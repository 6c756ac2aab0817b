-- Indexes the Gold models use to stay incremental: a product's or a customer's sale lines,
-- and the distinct SKUs / customers sold (a loose index scan instead of a full scan).
create index if not exists sales_product_product_sku on silver.sales_product (product_sku);
create index if not exists sales_customer_customer_id on silver.sales_customer (customer_id);
create index if not exists products_loaded_at on silver.products (_loaded_at);
create index if not exists customers_loaded_at on silver.customers (_loaded_at);
