{# post_hook: fresh (sampled, so cheap at any size) statistics keep the next run's plans on indexes. #}
{{
    config(
        unique_key='sales_item_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook='analyze {{ this }}',
        indexes=[
            {'columns': ['sales_item_id']},
            {'columns': ['_source_loaded_at']},
            {'columns': ['_updated_at']},
            {'columns': ['customer_id', 'day']},
        ],
    )
}}

{% set since = watermark('_source_loaded_at') %}

with

lines as (

    {% if is_incremental() %}
    -- new or changed lines, lines whose sale header changed, lines of a product that changed
    -- (a late-arriving product fills in its attributes here); each read through an index
    select lines.*
    from {{ source('silver', 'sales_product') }} as lines
    where lines._loaded_at > {{ since }}

    union

    select lines.*
    from {{ source('silver', 'sales_customer') }} as headers
    inner join {{ source('silver', 'sales_product') }} as lines on lines.sale_id = headers.id
    where headers._loaded_at > {{ since }}

    union

    select lines.*
    from {{ source('silver', 'products') }} as products
    inner join {{ source('silver', 'sales_product') }} as lines
        on lines.product_sku = products.product_sku
    where products._loaded_at > {{ since }}
    {% else %}
    select * from {{ source('silver', 'sales_product') }}
    {% endif %}

),

products as (

    select * from {{ source('silver', 'products') }}

),

with_header as (

    {% if is_incremental() %}
    -- a few new lines against a history of headers: one primary-key probe per line
    -- (offset 0 keeps the planner from turning it into a join that reads every header)
    select lines.*, headers.datetime, headers.customer_id, headers._loaded_at as header_loaded_at
    from lines
    cross join lateral (
        select datetime, customer_id, _loaded_at
        from {{ source('silver', 'sales_customer') }} as header
        where header.id = lines.sale_id
        offset 0
    ) as headers
    {% else %}
    select lines.*, headers.datetime, headers.customer_id, headers._loaded_at as header_loaded_at
    from lines
    inner join {{ source('silver', 'sales_customer') }} as headers on headers.id = lines.sale_id
    {% endif %}

),

final as (

    select
        with_header.sale_id || '-' || with_header.line_no as sales_item_id,
        with_header.sale_id,
        with_header.line_no,
        with_header.datetime as sales_datetime,
        (with_header.datetime at time zone 'UTC')::date as day,
        with_header.customer_id,
        with_header.product_sku,
        products.description as product_description,
        with_header.quantity as item_quantity,
        with_header.amount as item_amount,
        products.unit_amount,
        case
            when products.unit_amount * with_header.quantity > 0
                then round(1 - with_header.amount / (products.unit_amount * with_header.quantity), 4)
        end as discount_perc,
        greatest(with_header._loaded_at, with_header.header_loaded_at, products._loaded_at)
            as _source_loaded_at,
        now() as _updated_at
    from with_header
    left join products on products.product_sku = with_header.product_sku

)

select * from final
