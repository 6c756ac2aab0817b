{#
    Incremental: each (customer, day) touched since the watermark is recomputed in full from
    the fact. Touched: the pair of every fact row written since (where a new or changed sale
    lands) and the old pair of every change load recorded since (where a moved or shrunk sale
    was: silver.sales_changes). A pair left without sales comes out with n_sales = 0; the
    delete+insert replaces its old row with that one and the post_hook deletes it, so the pair
    disappears. (Such a row has a null _updated_at, max() of no fact rows: the index on
    _updated_at finds it without reading the whole mart.)

    One watermark serves both sources: max(_updated_at) of the mart, i.e. the start of the
    latest fact build whose rows the mart holds. Why it never skips a change: runs are
    serialised by the pipeline lock, so a change recorded by a load after the mart was last
    built has a _loaded_at later than every fact build the mart holds rows of, hence later than
    the watermark. It passes that change only once a fact build that ran after the load (and so
    rewrote the changed sale: the fact's own watermark includes the change log) reaches the
    mart: the pair the sale moved to carries that build's time. A mart built before the fact
    processed a change (`transform --select mart` alone) recomputes the old pair from the
    unchanged fact and keeps its watermark, so the next build recomputes it again. Deleting a
    pair can lower the watermark (its row may have held the maximum): that only makes the next
    run recompute a few pairs again, identically; a lower watermark can never lose work, only a
    higher one could.

    post_hook: the emptied pairs go, the contract's NOT NULLs are added to a mart built without
    them (macros/add_missing_not_null.sql), then statistics are refreshed when enough of the
    table changed (macros/analyze_if_stale.sql).
#}
{{
    config(
        unique_key=['customer_id', 'day'],
        incremental_strategy='delete+insert',
        post_hook=[
            'delete from {{ this }} where _updated_at is null and n_sales = 0',
            '{{ add_missing_not_null(this) }}',
            '{{ analyze_if_stale(this) }}',
        ],
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
    select customer_id, day
    from items
    where _updated_at > {{ since }}

    union

    -- every (customer, day) a changed sale left or shrank on (through the _loaded_at index)
    select customer_id, day
    from {{ source('silver', 'sales_changes') }}
    where _loaded_at > {{ since }}

),

final as (

    -- each touched pair recomputed in full from the fact, through its (customer_id, day) index;
    -- a pair with no fact row left gets n_sales = 0 (and nulls), removed by the post_hook
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
