{{
    config(
        unique_key=['customer_id', 'day'],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        indexes=[
            {'columns': ['customer_id', 'day']},
            {'columns': ['_updated_at']},
        ],
    )
}}

{% set since = watermark('_updated_at') %}

with

items as (

    select * from {{ ref('sales_item') }}

),

{% if is_incremental() %}

touched as (

    -- every (customer, day) a new or changed fact row lands on, old days included
    select distinct customer_id, day
    from items
    where _updated_at > {{ since }}

),

{% endif %}

scoped as (

    select items.*
    from items
    {% if is_incremental() %}
    inner join touched using (customer_id, day)
    {% endif %}

),

final as (

    select
        customer_id,
        day,
        count(distinct sale_id) as n_sales,
        count(*) as n_items,
        sum(item_quantity) as total_units,
        sum(item_amount) as total_revenue,
        avg(discount_perc) as avg_discount,
        max(_updated_at) as _updated_at
    from scoped
    group by customer_id, day

)

select * from final
