with

products as (

    select * from {{ source('silver', 'products') }}

),

sold_skus as (

    {{ distinct_values(source('silver', 'sales_product'), 'product_sku') }}

),

known as (

    select
        product_sku as product_id,
        description,
        supplier,
        unit_amount,
        false as is_inferred,
        _deleted_at is not null as is_deleted,
        _deleted_at as deleted_at
    from products

),

inferred as (

    -- sold before /products lists it: a placeholder until the real product arrives (a delisted
    -- product is not inferred: its silver row stays, marked deleted)
    select
        sold_skus.value as product_id,
        null::text as description,
        null::text as supplier,
        null::numeric as unit_amount,
        true as is_inferred,
        false as is_deleted,
        null::timestamptz as deleted_at
    from sold_skus
    where not exists (
        select from products where products.product_sku = sold_skus.value
    )

),

final as (

    select * from known
    union all
    select * from inferred

)

select * from final
