"""SQL of bench_scale.py: the hand-written floor for Gold, and the layouts compared at size.

The floor is what the dbt models compute from empty, written as two `create table … as select`
statements (no dbt, no snapshot, no dimensions): the fact with the same columns and joins as
models/core/sales_item.sql's full refresh, then the mart grouped from it.
"""

FLOOR_SCHEMA = "create schema floor"

FLOOR_FACT = """
create table floor.sales_item as
with changed as (
    select sale_id, max(_loaded_at) as changed_at
    from silver.sales_changes
    group by sale_id
)
select
    lines.sale_id || '-' || lines.line_no as sales_item_id,
    lines.sale_id,
    lines.line_no,
    headers.datetime as sales_datetime,
    (headers.datetime at time zone 'UTC')::date as day,
    headers.customer_id,
    lines.product_sku,
    products.description as product_description,
    lines.quantity as item_quantity,
    lines.amount as item_amount,
    products.unit_amount,
    case
        when products.unit_amount * lines.quantity > 0
            then round(1 - lines.amount / (products.unit_amount * lines.quantity), 4)
    end as discount_perc,
    greatest(lines._loaded_at, headers._loaded_at, products._loaded_at, changed.changed_at)
        as _source_loaded_at,
    now() as _updated_at
from silver.sales_product as lines
inner join silver.sales_customer as headers on headers.id = lines.sale_id
left join changed on changed.sale_id = lines.sale_id
left join silver.products as products on products.product_sku = lines.product_sku
"""

FLOOR_MART = """
create table floor.mart_sales_by_customer as
select
    customer_id,
    day,
    count(distinct sale_id) as n_sales,
    count(*) as n_items,
    sum(item_quantity) as total_units,
    sum(item_amount) as total_revenue,
    round(avg(discount_perc), 4) as avg_discount,
    max(_updated_at) as _updated_at
from floor.sales_item
group by customer_id, day
"""

# the indexes the models declare (config(indexes=...)), built after the data as dbt does
FACT_INDEXES = (
    ("sales_item_id",),
    ("sale_id",),
    ("_source_loaded_at",),
    ("_updated_at",),
    ("customer_id", "day"),
)
MART_INDEXES = (("customer_id", "day"), ("_updated_at",))

COUNTS = """
select
    (select count(*) from gold.sales_item) as gold_fact,
    (select count(*) from floor.sales_item) as floor_fact,
    (select count(*) from gold.mart_sales_by_customer) as gold_mart,
    (select count(*) from floor.mart_sales_by_customer) as floor_mart
"""

FACT_WATERMARK = (
    "select coalesce(max(_source_loaded_at), '-infinity'::timestamptz)::text from gold.sales_item"
)
MART_WATERMARK = (
    "select coalesce(max(_updated_at), '-infinity'::timestamptz)::text from gold.mart_sales_by_customer"
)

SIZES = """
select
    pg_database_size(current_database()) as database_bytes,
    pg_total_relation_size('gold.sales_item') as fact_bytes,
    pg_total_relation_size('gold.mart_sales_by_customer') as mart_bytes,
    pg_total_relation_size('silver.sales_product') as lines_bytes
"""

# -- layouts compared at the largest size (copies of floor.sales_item, same indexes) ----------

LAYOUT_SCHEMA = "create schema layout"
PARTITIONED_FACT = "create table layout.sales_item (like floor.sales_item) partition by range (day)"
MONTHS = """
select generate_series(date_trunc('month', min(day)), date_trunc('month', max(day)), '1 month')::date
from floor.sales_item
"""
PARTITION = "create table layout.{name} partition of layout.sales_item for values from ({start}) to ({end})"
FILL_PARTITIONED = "insert into layout.sales_item select * from floor.sales_item"
# the fact model's BRIN index (built with the floor's indexes); the layouts drop it for "plain"
BRIN_ON_DAY = "create index sales_item_day_brin on floor.sales_item using brin (day)"
DROP_BRIN_ON_DAY = "drop index floor.sales_item_day_brin"

# The three workloads, each with {fact} for the layout's table.
# 1. the hourly fact increment: delete+insert of the latest 1,000 sales' rows (as dbt's
#    delete+insert on sale_id does), inside a transaction rolled back afterwards
INCREMENT_BATCH = "create temporary table batch on commit drop as select * from {fact} where sale_id > %s"
INCREMENT_DELETE = "delete from {fact} where sale_id in (select distinct sale_id from batch)"
INCREMENT_INSERT = "insert into {fact} select * from batch"
# 2. the mart increment's read: every touched (customer, day) recomputed from the fact
MART_RECOMPUTE = """
select touched.customer_id, touched.day, figures.*
from (select distinct customer_id, day from {fact} where sale_id > %s) as touched
cross join lateral (
    select count(distinct f.sale_id), count(*), sum(f.item_quantity), sum(f.item_amount),
        round(avg(f.discount_perc), 4)
    from {fact} as f
    where f.customer_id = touched.customer_id and f.day = touched.day
) as figures
"""
# 3. a month of revenue by day (a dashboard's or `verify --since`'s shape)
MONTH_BY_DAY = """
select day, count(*), sum(item_amount)
from {fact}
where day >= %s::date and day < %s::date + 31
group by day
"""
