{{
    config(
        materialized='incremental',
        unique_key='sales_item_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
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

{% if is_incremental() %}

changed_lines as (

    -- new or changed lines, lines whose sale header changed, lines of a product that changed
    -- (a late-arriving product fills in its attributes here)
    select sale_id, line_no
    from {{ source('silver', 'sales_product') }}
    where _loaded_at > {{ since }}

    union

    select lines.sale_id, lines.line_no
    from {{ source('silver', 'sales_customer') }} as headers
    inner join {{ source('silver', 'sales_product') }} as lines on lines.sale_id = headers.id
    where headers._loaded_at > {{ since }}

    union

    select lines.sale_id, lines.line_no
    from {{ source('silver', 'products') }} as products
    inner join {{ source('silver', 'sales_product') }} as lines
        on lines.product_sku = products.product_sku
    where products._loaded_at > {{ since }}

),

{% endif %}

lines as (

    select lines.*
    from {{ source('silver', 'sales_product') }} as lines
    {% if is_incremental() %}
    inner join changed_lines using (sale_id, line_no)
    {% endif %}

),

headers as (

    select * from {{ source('silver', 'sales_customer') }}

),

products as (

    select * from {{ source('silver', 'products') }}

),

final as (

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
                then 1 - lines.amount / (products.unit_amount * lines.quantity)
        end as discount_perc,
        greatest(lines._loaded_at, headers._loaded_at, products._loaded_at) as _source_loaded_at,
        now() as _updated_at
    from lines
    inner join headers on headers.id = lines.sale_id
    left join products on products.product_sku = lines.product_sku

)

select * from final
