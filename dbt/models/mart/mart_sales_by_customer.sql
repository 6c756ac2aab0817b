{# post_hook: fresh (sampled, so cheap at any size) statistics keep the next run's plans on indexes. #}
{{
    config(
        unique_key=['customer_id', 'day'],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook='analyze {{ this }}',
        indexes=[
            {'columns': ['customer_id', 'day']},
            {'columns': ['_updated_at']},
        ],
    )
}}

{% set since = watermark('_updated_at') %}

with

items as {% if is_incremental() %}not materialized {% endif %}(

    -- read twice below: not materialized, so each read can use the fact's indexes
    select * from {{ ref('sales_item') }}

),

{% if is_incremental() %}

touched as (

    -- every (customer, day) a new or changed fact row lands on, old days included
    select distinct customer_id, day
    from items
    where _updated_at > {{ since }}

),

final as (

    -- each touched pair recomputed in full from the fact, through its (customer_id, day) index
    select touched.customer_id, touched.day, figures.*
    from touched
    cross join lateral (
        select
            count(distinct items.sale_id) as n_sales,
            count(*) as n_items,
            sum(items.item_quantity) as total_units,
            sum(items.item_amount) as total_revenue,
            round(avg(items.discount_perc), 4) as avg_discount,
            max(items._updated_at) as _updated_at
        from items
        where items.customer_id = touched.customer_id and items.day = touched.day
    ) as figures

)

{% else %}

final as (

    select
        customer_id,
        day,
        count(distinct sale_id) as n_sales,
        count(*) as n_items,
        sum(item_quantity) as total_units,
        sum(item_amount) as total_revenue,
        round(avg(discount_perc), 4) as avg_discount,
        max(_updated_at) as _updated_at
    from items
    group by customer_id, day

)

{% endif %}

select * from final
